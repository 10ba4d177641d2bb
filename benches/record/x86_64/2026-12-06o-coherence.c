#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <stdatomic.h>
#include <immintrin.h>
// steps: string of A/B with r (read) or w (write); the last step is timed; repeated R times
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static float *b; static long L; static _Atomic long step; static const char*prog; static int n; static int R=200; static double tt; static volatile float sink;
static void pin(int c){cpu_set_t s;CPU_ZERO(&s);CPU_SET(c,&s);pthread_setaffinity_np(pthread_self(),sizeof s,&s);}
static float rd(float*b,long L){__m256 a0=_mm256_setzero_ps(),a1=a0,a2=a0,a3=a0;for(long i=0;i<L;i+=32){a0=_mm256_add_ps(a0,_mm256_load_ps(b+i));a1=_mm256_add_ps(a1,_mm256_load_ps(b+i+8));a2=_mm256_add_ps(a2,_mm256_load_ps(b+i+16));a3=_mm256_add_ps(a3,_mm256_load_ps(b+i+24));}float o[8];_mm256_storeu_ps(o,_mm256_add_ps(_mm256_add_ps(a0,a1),_mm256_add_ps(a2,a3)));return o[0];}
static void wr(float*b,long L,float v){__m256 x=_mm256_set1_ps(v);for(long i=0;i<L;i+=8)_mm256_store_ps(b+i,x);}
void* worker(void*a){ long me=(long)a; pin(me); for(long s=0;s<(long)n*R;s++){ int k=s%n; if(prog[2*k]-'A'!=me) continue; while(atomic_load(&step)!=s); double t0=now(); char op=prog[2*k+1]; if(op=='r') sink=rd(b,L); else if(op=='w') wr(b,L,s); else if(op=='n'){__m256 x=_mm256_set1_ps(s);for(long i=0;i<L;i+=8)_mm256_stream_ps(b+i,x);_mm_sfence();} else if(op=='f'){for(long i=0;i<L;i+=16)_mm_clflushopt(b+i);_mm_sfence(); wr(b,L,s);} else if(op=='p'){__m256 x=_mm256_set1_ps(s);for(long i=0;i<L;i+=8){if((i&15)==0)_m_prefetchw(b+i+256);_mm256_store_ps(b+i,x);}} else if(op=='z'){for(long i=0;i<L;i+=16)_mm_clflushopt(b+i);_mm_sfence();} if(k==n-1) tt+=now()-t0; atomic_store(&step,s+1);} return 0;}
int main(int c,char**v){ L=atol(v[1])/4; prog=v[2]; n=strlen(prog)/2; b=aligned_alloc(64,L*4); for(long i=0;i<L;i++)b[i]=1;
 pthread_t t[2]; for(long i=0;i<2;i++)pthread_create(&t[i],0,worker,(void*)i); for(int i=0;i<2;i++)pthread_join(t[i],0);
 printf("%s %ld KB: last step %.1f GB/s\n", prog, L*4/1024, L*4.0*R/tt/1e9);}
