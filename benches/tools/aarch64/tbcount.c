/* A qemu TCG plugin (plugin API version 1, as Debian 12's qemu-user 7.2 loads it) that
 * counts the guest instructions each translation block executes: an inline counter per
 * block, added to at every execution, and at exit one line per block that ran,
 * "vaddr instructions executions", into the file given as `out=PATH`.
 *
 * The few declarations it needs are written here (Debian ships no qemu-plugin.h):
 * qemu_plugin_id_t is a uint64_t, the inline operation 0 adds to a uint64_t, and the
 * plugin says which API version it was built for in `qemu_plugin_version`.
 *
 * Build: cc -O2 -shared -fPIC -o tbcount.so tbcount.c   (count.sh does)
 * Run:   qemu-aarch64 -plugin ./tbcount.so,out=counts.txt PROGRAM ARGS */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_info_t;

extern void qemu_plugin_register_vcpu_tb_trans_cb(
    qemu_plugin_id_t, void (*)(qemu_plugin_id_t, struct qemu_plugin_tb *));
extern void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *, int op,
                                                     void *ptr, uint64_t imm);
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
extern uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *);
extern void qemu_plugin_register_atexit_cb(qemu_plugin_id_t,
                                           void (*)(qemu_plugin_id_t, void *), void *);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

/* one translated block: where it starts, its length, how often it ran */
struct block {
    uint64_t vaddr, instructions, executions;
    struct block *next;
};

static struct block *blocks;
static const char *out_path = "tbcount.txt";

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    struct block *b = calloc(1, sizeof *b);
    if (!b) {
        return;
    }
    b->vaddr = qemu_plugin_tb_vaddr(tb);
    b->instructions = qemu_plugin_tb_n_insns(tb);
    b->next = blocks;
    blocks = b;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, 0 /* add to a uint64_t */, &b->executions, 1);
}

static void on_exit_write(qemu_plugin_id_t id, void *unused) {
    FILE *f = fopen(out_path, "w");
    if (!f) {
        fprintf(stderr, "tbcount: cannot write %s\n", out_path);
        return;
    }
    for (struct block *b = blocks; b; b = b->next) {
        if (b->executions) {
            fprintf(f, "%llx %llu %llu\n", (unsigned long long)b->vaddr,
                    (unsigned long long)b->instructions, (unsigned long long)b->executions);
        }
    }
    fclose(f);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id,
                                                               const struct qemu_info_t *info,
                                                               int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            out_path = argv[i] + 4;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_exit_write, NULL);
    return 0;
}
