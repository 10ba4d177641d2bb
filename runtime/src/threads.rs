//! Threads for the kernels (feature `threads`, which needs `std`): `with_threads` runs a
//! closure, typically a model's `run`, with the heavy kernels (convolutions, matrix
//! products) splitting their output rows over a persistent pool of that many threads,
//! kept alive between calls (rayon's). Without the feature, or with one thread, every
//! kernel runs on the calling thread and this module costs nothing.

#[cfg(feature = "threads")]
mod pool {
    extern crate std;

    use rayon::prelude::*;
    use std::boxed::Box;
    use std::cell::Cell;
    use std::sync::{Mutex, OnceLock};
    use std::vec::Vec;

    std::thread_local! {
        /// The threads the kernels called on this thread may use.
        static THREADS: Cell<usize> = const { Cell::new(1) };
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

    pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
        match pool(threads) {
            // the whole closure runs on a pool thread: the kernels' splits then hand part
            // of their work to the pool's other threads without waking the caller, and the
            // pool's idle threads never compete with the caller for a core while it runs
            // the parts that do not split
            Some(p) if threads > 1 => p.install(move || with_count(threads, f)),
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

    pub fn map_parts<T: Send>(parts: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
        let threads = THREADS.get();
        match pool(threads) {
            Some(p) if threads > 1 && parts > 1 => {
                p.install(|| (0..parts).into_par_iter().map(&f).collect())
            }
            _ => (0..parts).map(f).collect(),
        }
    }

    pub fn for_each_chunk(data: &mut [f32], chunk: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
        let threads = THREADS.get();
        match pool(threads) {
            Some(p) if threads > 1 && data.len() > chunk => p.install(|| {
                data.par_chunks_mut(chunk)
                    .enumerate()
                    .for_each(|(i, c)| f(i, c))
            }),
            _ => data
                .chunks_mut(chunk)
                .enumerate()
                .for_each(|(i, c)| f(i, c)),
        }
    }
}

/// Runs `f` with the kernels it calls splitting their work over `threads` threads: with
/// more than one, `f` itself runs on a thread of a persistent pool of that many (one pool
/// per count, built on first use and kept), which takes its share of each split while the
/// calling thread waits; the pool's other threads sleep between the kernels' splits
/// instead of competing for a core. Results are the same as on one thread, bit for bit:
/// each output element is summed by one thread in the same order.
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

/// `f(i)` for every `i < parts`, on the pool when [`current`] is above 1; the results in
/// order of `i`.
#[cfg(feature = "threads")]
pub(crate) fn map_parts<T: Send>(
    parts: usize,
    f: impl Fn(usize) -> T + Sync,
) -> alloc::vec::Vec<T> {
    pool::map_parts(parts, f)
}
