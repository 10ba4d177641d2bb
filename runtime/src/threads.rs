//! Threads for the kernels (feature `threads`, which needs `std`): `with_threads` runs a
//! closure, typically a model's `run`, with the heavy kernels (convolutions, matrix
//! products, softmax, layer norm) splitting their output rows over a persistent pool of
//! that many threads,
//! kept alive between calls (rayon's). Without the feature, or with one thread, every
//! kernel runs on the calling thread and this module costs nothing.

#[cfg(feature = "threads")]
mod pool {
    extern crate std;

    use std::any::Any;
    use std::boxed::Box;
    use std::cell::{Cell, RefCell, UnsafeCell};
    use std::hint::spin_loop;
    use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    use std::sync::{Arc, Mutex, OnceLock, PoisonError};
    use std::vec::Vec;

    std::thread_local! {
        /// The threads the kernels called on this thread may use.
        static THREADS: Cell<usize> = const { Cell::new(1) };
        /// The team this thread leads inside `with_threads` (null outside).
        static TEAM: Cell<*const Team> = const { Cell::new(core::ptr::null()) };
        /// This thread's buffer for [`with_scratch`], kept between calls.
        static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }

    pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut kept) => {
                if kept.len() < len {
                    kept.resize(len, 0.0);
                }
                let buffer = &mut kept[..len];
                // (debug builds: stale floats a caller fails to write show as NaN)
                if cfg!(debug_assertions) {
                    buffer.fill(f32::NAN);
                }
                f(buffer)
            }
            // (a caller inside another's `f`: a buffer of its own)
            Err(_) => f(&mut std::vec![f32::NAN; len]),
        })
    }

    /// One pool per thread count asked for, built on first use and kept.
    static POOLS: OnceLock<Mutex<Vec<(usize, &'static rayon::ThreadPool)>>> = OnceLock::new();

    fn pool(threads: usize) -> Option<&'static rayon::ThreadPool> {
        let pools = POOLS.get_or_init(|| Mutex::new(Vec::new()));
        let mut pools = pools.lock().ok()?;
        if let Some((_, p)) = pools.iter().find(|(n, _)| *n == threads) {
            return Some(p);
        }
        let built = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| std::format!("dnnfusion-{i}"))
            .build()
            .ok()?;
        let leaked: &'static rayon::ThreadPool = Box::leak(Box::new(built));
        pools.push((threads, leaked));
        Some(leaked)
    }

    /// A split's work, `f(part)`, its lifetime erased: valid only while the split that
    /// posted it waits (see [`Team::split`]).
    type Job = *const (dyn Fn(usize) + Sync + 'static);

    /// A value alone on its cache lines (two, for the adjacent-line prefetcher): a core
    /// writing one field never takes the line another core spins on.
    #[repr(align(128))]
    #[derive(Default)]
    struct Alone<T>(T);

    /// One thread's home parts of the posted split, `next..end`: it takes them first, in
    /// order, then takes what is left of the others' (each part taken once, by whichever
    /// `fetch_add` on `next` returned it below `end`).
    #[derive(Default)]
    struct Home {
        next: AtomicUsize,
        end: AtomicUsize,
    }

    /// The threads of one `with_threads` call: the leader (thread 0) runs the closure;
    /// the others spin, waiting for the leader's splits, and take parts of each as it is
    /// posted. No thread sleeps while the closure runs (on a virtual machine, waking a
    /// sleeping core costs more than a small kernel). Each split's parts are dealt out in
    /// contiguous home ranges, the same for every split of the same size, so a kernel
    /// that splits its output as the kernel before it did reads what its own core wrote:
    /// when the two cores share no cache (this machine's virtual cores at times), data
    /// from the other core arrives at a quarter of the speed.
    struct Team {
        /// the posted split (written by the leader only while no helper is `busy`)
        job: UnsafeCell<Option<(Job, usize)>>,
        /// odd while the leader writes a split, even once it is posted
        generation: Alone<AtomicUsize>,
        /// each thread's home parts of the posted split
        homes: Vec<Alone<Home>>,
        /// parts finished
        done_parts: Alone<AtomicUsize>,
        /// helpers that may read `job`: registered for a posted split, not yet left
        busy: Alone<AtomicUsize>,
        /// a part panicked on a helper
        panicked: AtomicBool,
        /// the closure has returned: helpers leave
        stop: Alone<AtomicBool>,
    }

    // SAFETY: `job` is written by the leader only while `generation` is odd and no helper
    // is `busy` (see `split`); a helper reads it only after it saw the even generation
    // that follows the write and registered as `busy` with the generation unchanged
    // (see `help`); every other field is atomic. The job itself is `Sync`.
    #[allow(unsafe_code)]
    unsafe impl Sync for Team {}

    // SAFETY: the only field that is not `Send` is `job`'s pointer, dereferenced only
    // under the protocol above, whichever thread holds the team (the helpers hold it by
    // `Arc`, and the last one to let go drops it: nothing in it needs its thread).
    #[allow(unsafe_code)]
    unsafe impl Send for Team {}

    impl Team {
        fn new(threads: usize) -> Team {
            Team {
                job: UnsafeCell::new(None),
                generation: Alone::default(),
                homes: (0..threads.max(1)).map(|_| Alone::default()).collect(),
                done_parts: Alone::default(),
                busy: Alone::default(),
                panicked: AtomicBool::new(false),
                stop: Alone::default(),
            }
        }

        /// Helper `me`'s loop: take parts of each posted split until `stop`.
        fn help(&self, me: usize) {
            let mut seen = 0;
            while !self.stop.0.load(SeqCst) {
                let generation = self.generation.0.load(SeqCst);
                // odd: the leader is writing a split; `seen`: this one's parts are taken
                if generation == seen || generation % 2 == 1 {
                    spin_loop();
                    continue;
                }
                self.busy.0.fetch_add(1, SeqCst);
                // the leader marks a write (odd) before it checks `busy`: unchanged here,
                // it will wait for this helper before writing again
                if self.generation.0.load(SeqCst) == generation {
                    seen = generation;
                    // SAFETY: the split was written before `generation` became even (seen
                    // above), and is not written again while this helper is `busy`.
                    #[allow(unsafe_code)]
                    let posted = unsafe { *self.job.get() };
                    if let Some((job, _)) = posted {
                        if self.take_parts(job, me).is_some() {
                            self.panicked.store(true, SeqCst);
                        }
                    }
                }
                self.busy.0.fetch_sub(1, SeqCst);
            }
        }

        /// Runs thread `me`'s home parts of `job`, then the others' left untaken, until
        /// none is left, also after a part panics (the leader never waits on parts that
        /// only a queued helper could take); the payload of the first part that panicked.
        fn take_parts(&self, job: Job, me: usize) -> Option<Box<dyn Any + Send>> {
            let mut first = None;
            let threads = self.homes.len();
            for home in (0..threads).map(|k| &self.homes[(me + k) % threads].0) {
                loop {
                    let part = home.next.fetch_add(1, SeqCst);
                    if part >= home.end.load(SeqCst) {
                        break;
                    }
                    // a part that panics is still counted, so the leader never waits
                    let _done = Done(&self.done_parts.0);
                    // SAFETY: `job` points to the closure of the split that posted it,
                    // which waits until every part is done and no helper is `busy`
                    // before it returns: the closure is alive here.
                    #[allow(unsafe_code)]
                    let ran = catch_unwind(AssertUnwindSafe(|| unsafe { (*job)(part) }));
                    if let Err(payload) = ran {
                        first.get_or_insert(payload);
                    }
                }
            }
            first
        }

        /// `f(part)` for every `part < parts`, shared with the helpers; returns when all
        /// are done and no helper still holds `f`.
        fn split(&self, parts: usize, f: &(dyn Fn(usize) + Sync)) {
            // an odd generation marks the write; then no helper reads `job` until it is
            // even again (helpers that registered before the mark are waited for)
            let generation = self.generation.0.load(SeqCst);
            self.generation.0.store(generation + 1, SeqCst);
            while self.busy.0.load(SeqCst) != 0 {
                spin_loop();
            }
            // SAFETY: only the lifetime is erased; `f` outlives every use of `job`, since
            // this function does not return before no helper holds it (below).
            #[allow(unsafe_code)]
            let job: Job =
                unsafe { core::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), Job>(f) };
            // SAFETY: the generation is odd and no helper is `busy`: none reads `job`.
            #[allow(unsafe_code)]
            unsafe {
                *self.job.get() = Some((job, parts))
            };
            // thread t's home: parts t * parts / threads .. (t + 1) * parts / threads
            let threads = self.homes.len();
            for (t, home) in self.homes.iter().enumerate() {
                home.0.next.store(t * parts / threads, SeqCst);
                home.0.end.store((t + 1) * parts / threads, SeqCst);
            }
            self.done_parts.0.store(0, SeqCst);
            self.generation.0.store(generation + 2, SeqCst);
            let mine = self.take_parts(job, 0);
            while self.done_parts.0.load(SeqCst) < parts || self.busy.0.load(SeqCst) != 0 {
                spin_loop();
            }
            if let Some(payload) = mine {
                resume_unwind(payload);
            }
            if self.panicked.swap(false, SeqCst) {
                panic!("a kernel panicked on a pool thread");
            }
        }
    }

    /// Counts a part as done when dropped (also when it panics).
    struct Done<'a>(&'a AtomicUsize);

    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
        match pool(threads) {
            // the closure runs on a pool thread, the pool's other threads spin beside it
            // as its team until it returns
            Some(p) if threads > 1 => p.install(move || {
                // the helpers hold the team by `Arc` and leave when they see `stop`: the
                // leader does not wait for them (a `rayon::scope` did, and freed its
                // scope while a finished helper's job still held it: miri, Tree Borrows)
                let team = Arc::new(Team::new(threads));
                for me in 1..threads {
                    let team = Arc::clone(&team);
                    p.spawn(move || team.help(me));
                }
                let before = TEAM.replace(&*team);
                let result = catch_unwind(AssertUnwindSafe(|| with_count(threads, f)));
                TEAM.set(before);
                team.stop.0.store(true, SeqCst);
                result.unwrap_or_else(|payload| resume_unwind(payload))
            }),
            _ => with_count(threads, f),
        }
    }

    /// Runs `f` with this thread's count of threads set to `threads`.
    fn with_count<R>(threads: usize, f: impl FnOnce() -> R) -> R {
        let before = THREADS.replace(threads.max(1));
        let result = f();
        THREADS.set(before);
        result
    }

    pub fn current() -> usize {
        THREADS.get()
    }

    /// `f(part)` for every `part < parts`: shared with this thread's team when it leads
    /// one, else here in order.
    fn run_parts(parts: usize, f: &(dyn Fn(usize) + Sync)) {
        let team = TEAM.get();
        if team.is_null() || parts <= 1 {
            (0..parts).for_each(f);
            return;
        }
        // SAFETY: TEAM is set only while `with_threads` runs its closure on this thread,
        // and the team lives until that closure returns.
        #[allow(unsafe_code)]
        let team = unsafe { &*team };
        team.split(parts, f);
    }

    pub fn for_each_part(parts: usize, f: impl Fn(usize) + Sync) {
        run_parts(parts, &f);
    }

    pub fn for_each_chunk(data: &mut [f32], chunk: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
        let chunks: Vec<Mutex<Option<&mut [f32]>>> = data
            .chunks_mut(chunk)
            .map(|c| Mutex::new(Some(c)))
            .collect();
        run_parts(chunks.len(), &|i| {
            let taken = chunks[i]
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(c) = taken {
                f(i, c);
            }
        });
    }
}

/// Runs `f` with the kernels it calls splitting their work over `threads` threads: with
/// more than one, `f` itself runs on a thread of a persistent pool of that many (one pool
/// per count, built on first use and kept) while the calling thread waits, and the pool's
/// other threads spin until `f` returns, each taking parts of every split as soon as it
/// is posted (no thread sleeps and wakes per kernel). Results are the same as on one
/// thread, bit for bit: each output element is summed by one thread in the same order.
#[cfg(feature = "threads")]
pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    pool::with_threads(threads, f)
}

/// The threads the kernels called on this thread may use (1 outside `with_threads`).
pub fn current() -> usize {
    #[cfg(feature = "threads")]
    return pool::current();
    #[cfg(not(feature = "threads"))]
    1
}

/// Calls `f(i, chunk)` on the `i`-th chunk of `chunk` floats of `data` (the last may be
/// shorter), on the pool when [`current`] is above 1.
pub(crate) fn for_each_chunk(data: &mut [f32], chunk: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let chunk = chunk.max(1);
    #[cfg(feature = "threads")]
    pool::for_each_chunk(data, chunk, f);
    #[cfg(not(feature = "threads"))]
    data.chunks_mut(chunk)
        .enumerate()
        .for_each(|(i, c)| f(i, c));
}

/// `f(i)` for every `i < parts`, on the pool when [`current`] is above 1 (each part
/// writes its results itself, for example through a `kernels::SplitOutput`).
#[cfg(feature = "threads")]
pub(crate) fn for_each_part(parts: usize, f: impl Fn(usize) + Sync) {
    pool::for_each_part(parts, f)
}

/// Calls `f` with `len` floats of this thread's own, kept between calls for the next
/// caller on this thread (a split's part of a 224x224 stem, 800 KB, was allocated and
/// zeroed on every call). The floats hold whatever the last caller left (NaN in debug
/// builds): `f` must write each float before it reads it.
#[cfg(feature = "threads")]
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    pool::with_scratch(len, f)
}

#[cfg(all(test, feature = "threads"))]
mod tests {
    extern crate std;

    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Many splits in a row, of every size, each part run exactly once;
    /// chunks handed out whole and disjoint (on two threads and on three, whose home
    /// ranges are uneven for most sizes).
    #[test]
    fn splits_run_every_part_once_in_order() {
        let splits = if cfg!(miri) { 20 } else { 2000 };
        for threads in [2, 3] {
            splits_in_a_row(threads, splits);
        }
    }

    fn splits_in_a_row(threads: usize, splits: usize) {
        with_threads(threads, || {
            for n in 0..splits {
                let parts = n % 8;
                let calls: std::vec::Vec<AtomicUsize> =
                    (0..parts).map(|_| AtomicUsize::new(0)).collect();
                for_each_part(parts, |i| {
                    calls[i].fetch_add(1, Ordering::SeqCst);
                });
                let got: std::vec::Vec<usize> =
                    calls.iter().map(|c| c.load(Ordering::SeqCst)).collect();
                assert_eq!(got, std::vec![1; parts]);
                let mut data = std::vec![0.0f32; 10 + n % 7];
                for_each_chunk(&mut data, 3, |i, chunk| chunk.fill(i as f32 + 1.0));
                let want: std::vec::Vec<f32> =
                    (0..data.len()).map(|k| (k / 3) as f32 + 1.0).collect();
                assert_eq!(data, want);
            }
        });
    }

    /// Parts writing interleaved ranges of one output through `kernels::SplitOutput`
    /// (pixels `lo..hi` of every channel, as the pixel splits do) on two threads: each
    /// float written once, by its part (and, under miri, no borrow overlaps another).
    #[test]
    fn parts_write_interleaved_ranges_of_one_output() {
        let (rows, width, parts) = (3, 10usize, 4);
        let per = width.div_ceil(parts);
        let mut out = std::vec![f32::NAN; rows * width];
        with_threads(2, || {
            let shared = crate::kernels::SplitOutput::new(&mut out);
            for_each_part(parts, |i| {
                let (lo, hi) = (i * per, width.min((i + 1) * per));
                for r in 0..rows {
                    // SAFETY: part `i` alone writes columns `lo..hi` of each row
                    #[allow(unsafe_code)]
                    let dst = unsafe { shared.range(r * width + lo, hi - lo) };
                    dst.fill((r * 100 + i) as f32);
                }
            });
        });
        let want: std::vec::Vec<f32> = (0..rows * width)
            .map(|k| ((k / width) * 100 + k % width / per) as f32)
            .collect();
        assert_eq!(out, want);
    }

    /// Parts storing through one output shared by atomics (`kernels::SharedStores`, a
    /// fused transpose's scattered stores), single floats and runs, on two threads: the
    /// floats the one-thread loop stores (under miri: no data race, no bad borrow).
    #[test]
    fn parts_store_through_one_shared_output() {
        use crate::kernels::{SharedStores, Stores};
        let (parts, run) = (4, 3);
        let mut out = std::vec![f32::NAN; parts * run * 2];
        with_threads(2, || {
            let shared = SharedStores::new(&mut out);
            for_each_part(parts, |i| {
                let mut into = shared;
                let run_of = [i as f32, i as f32 + 0.25, i as f32 + 0.5];
                into.put_run((parts - 1 - i) * run, &run_of);
                for (j, v) in run_of.iter().enumerate() {
                    into.put(parts * run + j * parts + i, -v);
                }
            });
        });
        let mut want = std::vec![f32::NAN; parts * run * 2];
        for i in 0..parts {
            for j in 0..run {
                let v = i as f32 + j as f32 * 0.25;
                want[(parts - 1 - i) * run + j] = v;
                want[parts * run + j * parts + i] = -v;
            }
        }
        assert_eq!(out, want);
    }

    /// A part that panics, on whichever thread, makes the split panic (never a wait
    /// forever), and the team keeps working afterwards.
    #[test]
    fn a_panicking_part_panics_the_split_and_the_team_goes_on() {
        with_threads(2, || {
            for bad in 0..4 {
                let caught = std::panic::catch_unwind(|| {
                    for_each_part(4, |i| assert!(i != bad, "part {i} fails"))
                });
                assert!(caught.is_err(), "part {bad} panicked, the split must too");
                let calls = AtomicUsize::new(0);
                for_each_part(3, |_| {
                    calls.fetch_add(1, Ordering::SeqCst);
                });
                assert_eq!(calls.load(Ordering::SeqCst), 3);
            }
        });
    }
}
