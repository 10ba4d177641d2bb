//! Counted work: how many elementary steps each stage took on this thread, so that a test
//! can check that compile cost grows linearly with model size without timing anything
//! (`compiler/tests/compile_cost.rs`).
//!
//! A unit is one visit of the loops whose trip count could grow with the graph: a node or
//! value visited by a whole-graph pass, a (node, rule) pair tried by `rewrite`, a pair of
//! blocks examined by `fuse`'s merge step, a member checked by its constraints, an
//! element walked by [`crate::element::contiguous_run`], a byte of a block function's
//! sharing key. The counts are only compared with each other (the same stage on a model
//! and on one twice as deep), never with time.
//!
//! ```text
//!   let (models, work) = work::measure(|| compile(tokens));
//!   work.of(Stage::Fuse)   // units counted by fuse while compiling
//! ```

use std::cell::Cell;

/// The stages whose work is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// `check` (re-run after each rewrite round in debug builds).
    Check,
    /// `rewrite`, including the guard that re-plans rewritten graphs.
    Rewrite,
    /// `prepare`: weight packing, the load-time split, parameter-only values.
    Prepare,
    /// `fuse`: seeds, growth, merging and the block constraints.
    Fuse,
    /// `plan`: slots and arena offsets.
    Plan,
    /// `codegen`: block functions, their sharing, store maps.
    Codegen,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 6] = [
        Stage::Check,
        Stage::Rewrite,
        Stage::Prepare,
        Stage::Fuse,
        Stage::Plan,
        Stage::Codegen,
    ];

    /// The stage's module name.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Check => "check",
            Stage::Rewrite => "rewrite",
            Stage::Prepare => "prepare",
            Stage::Fuse => "fuse",
            Stage::Plan => "plan",
            Stage::Codegen => "codegen",
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// Units of work counted per stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Work {
    units: [u64; Stage::ALL.len()],
}

impl Work {
    /// The units counted by `stage`.
    pub fn of(&self, stage: Stage) -> u64 {
        self.units.get(stage.slot()).copied().unwrap_or(0)
    }

    /// The units counted by every stage.
    pub fn total(&self) -> u64 {
        self.units.iter().sum()
    }
}

thread_local! {
    static COUNTED: Cell<Work> = const { Cell::new(Work { units: [0; Stage::ALL.len()] }) };
}

/// Adds `units` to `stage`'s count on this thread.
pub(crate) fn add(stage: Stage, units: usize) {
    COUNTED.with(|counted| {
        let mut work = counted.get();
        if let Some(u) = work.units.get_mut(stage.slot()) {
            *u = u.saturating_add(units as u64);
        }
        counted.set(work);
    });
}

/// Runs `f` and returns its result with the work the stages counted meanwhile on this
/// thread.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, Work) {
    let before = COUNTED.with(Cell::get);
    let result = f();
    let after = COUNTED.with(Cell::get);
    let mut work = Work::default();
    for ((w, a), b) in work.units.iter_mut().zip(after.units).zip(before.units) {
        *w = a.saturating_sub(b);
    }
    (result, work)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measure_counts_only_its_own_work() {
        add(Stage::Fuse, 5);
        let ((), work) = measure(|| {
            add(Stage::Fuse, 3);
            add(Stage::Codegen, 2);
        });
        assert_eq!(work.of(Stage::Fuse), 3);
        assert_eq!(work.of(Stage::Codegen), 2);
        assert_eq!(work.of(Stage::Plan), 0);
        assert_eq!(work.total(), 5);
    }
}
