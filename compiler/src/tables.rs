//! The facts of the paper, as data, in one place: the mapping type of every op
//! (Table 2, DESIGN.md §3) and the fusion lattice (Table 3, DESIGN.md §4).
//!
//! The planner (`fuse`), the report and the docs read these tables; nothing else
//! encodes them again.

use crate::ir::{Graph, Node, Op};

/// How the elements of an op's output depend on the elements of its inputs (paper §3.1).
/// The order is the complexity order used when an op has several inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MappingType {
    /// Each output element reads one input element at the same position.
    OneToOne,
    /// Same elements, new shape (reshape, flatten, squeeze, unsqueeze).
    Reorganize,
    /// Same elements, permuted (transpose).
    Shuffle,
    /// One input element feeds several outputs (broadcast, expand, gather, resize, pad).
    OneToMany,
    /// Each output reads many inputs (conv, matmul, pooling, reductions, normalizations).
    ManyToMany,
}

impl MappingType {
    /// All five, in table order (rows and columns of [`FUSION_TABLE`]).
    pub const ALL: [MappingType; 5] = [
        MappingType::OneToOne,
        MappingType::OneToMany,
        MappingType::ManyToMany,
        MappingType::Reorganize,
        MappingType::Shuffle,
    ];

    /// Lowercase name, as used in messages and reports (`many-to-many`).
    pub fn name(self) -> &'static str {
        match self {
            MappingType::OneToOne => "one-to-one",
            MappingType::OneToMany => "one-to-many",
            MappingType::ManyToMany => "many-to-many",
            MappingType::Reorganize => "reorganize",
            MappingType::Shuffle => "shuffle",
        }
    }

    /// Index in [`MappingType::ALL`] (row/column of the fusion table).
    pub fn index(self) -> usize {
        match self {
            MappingType::OneToOne => 0,
            MappingType::OneToMany => 1,
            MappingType::ManyToMany => 2,
            MappingType::Reorganize => 3,
            MappingType::Shuffle => 4,
        }
    }
}

/// The mapping type of one node, given the shapes it sees.
///
/// Parameters (weights) do not count: a conv's or a batch norm's per-channel vectors are
/// part of the op. A binary op or `where` whose data operands all have the output's shape
/// is One-to-One; with broadcasting it is One-to-Many.
pub fn classify(graph: &Graph, node: &Node) -> MappingType {
    let out = graph.shape(node.output);
    let data_operands_match = node
        .inputs
        .iter()
        .filter(|&&v| !matches!(graph.values.get(v).map(|v| &v.kind), Some(crate::ir::ValueKind::Param(_))))
        .all(|&v| graph.shape(v) == out);
    classify_op(&node.op, data_operands_match)
}

/// The mapping type of an op; `same_shape` says whether its data operands all have the
/// output's shape (decides elementwise vs broadcasting ops). One `match`, no `_` arm.
pub fn classify_op(op: &Op, same_shape: bool) -> MappingType {
    use MappingType::*;
    match op {
        Op::Unary(_) | Op::Prelu | Op::BatchNorm { .. } | Op::Concat { .. } | Op::Slice { .. } => OneToOne,
        Op::Binary(_) | Op::Where => {
            if same_shape {
                OneToOne
            } else {
                OneToMany
            }
        }
        Op::Expand | Op::Gather { .. } | Op::Resize(_) | Op::Pad { .. } => OneToMany,
        Op::Linear
        | Op::MatMul
        | Op::Conv2d(_)
        | Op::ConvTranspose2d(_)
        | Op::MaxPool2d(_)
        | Op::AvgPool2d(_)
        | Op::GlobalAvgPool
        | Op::GlobalMaxPool
        | Op::Reduce { .. }
        | Op::Softmax { .. }
        | Op::LogSoftmax { .. }
        | Op::LayerNorm { .. }
        | Op::GroupNorm { .. }
        | Op::InstanceNorm { .. }
        | Op::Cumsum { .. } => ManyToMany,
        Op::Reshape(_) => Reorganize,
        Op::Transpose { .. } => Shuffle,
    }
}

/// Whether a pair may fuse (the colours of Table 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Colour {
    /// Legal and profitable: fuse.
    Green,
    /// Legal; fuse when the cost model says it pays.
    Yellow,
    /// Illegal or clearly unprofitable: never fuse.
    Red,
}

/// One cell of the fusion table: the colour and, unless red, the fused op's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FusionCell {
    /// May the pair fuse?
    pub colour: Colour,
    /// The mapping type of the fused pair (`None` for red cells).
    pub result: Option<MappingType>,
}

const fn cell(colour: Colour, result: MappingType) -> FusionCell {
    FusionCell { colour, result: Some(result) }
}

const RED: FusionCell = FusionCell { colour: Colour::Red, result: None };

/// Table 3: `FUSION_TABLE[first][second]` for `first -> second`, rows and columns in
/// [`MappingType::ALL`] order (O2O, O2M, M2M, Reorg, Shuffle).
///
/// The paper leaves five colours unstated; these are our choice (DESIGN.md §4):
/// O2M -> O2M is yellow (a second broadcast can multiply reads), and
/// Reorg/Shuffle -> Reorg/Shuffle are green (both are pure index translations).
pub const FUSION_TABLE: [[FusionCell; 5]; 5] = {
    use Colour::*;
    use MappingType::*;
    [
        // first = One-to-One
        [cell(Green, OneToOne), cell(Green, OneToMany), cell(Green, ManyToMany), cell(Green, Reorganize), cell(Green, Shuffle)],
        // first = One-to-Many  (O2M -> O2M yellow: our choice)
        [cell(Green, OneToMany), cell(Yellow, OneToMany), RED, cell(Yellow, OneToMany), cell(Yellow, OneToMany)],
        // first = Many-to-Many
        [cell(Green, ManyToMany), cell(Yellow, ManyToMany), RED, cell(Yellow, ManyToMany), cell(Yellow, ManyToMany)],
        // first = Reorganize  (-> Reorg and -> Shuffle green: our choice)
        [cell(Green, Reorganize), cell(Yellow, OneToMany), cell(Yellow, ManyToMany), cell(Green, Reorganize), cell(Green, Reorganize)],
        // first = Shuffle  (-> Reorg and -> Shuffle green: our choice)
        [cell(Green, Shuffle), cell(Yellow, OneToMany), cell(Yellow, ManyToMany), cell(Green, Reorganize), cell(Green, Shuffle)],
    ]
};

/// The cell for `first -> second`.
pub fn fusion_cell(first: MappingType, second: MappingType) -> FusionCell {
    FUSION_TABLE
        .get(first.index())
        .and_then(|row| row.get(second.index()))
        .copied()
        .unwrap_or(RED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Colour::*;
    use MappingType::*;

    fn assert_cell(first: MappingType, second: MappingType, colour: Colour, result: Option<MappingType>) {
        assert_eq!(fusion_cell(first, second), FusionCell { colour, result }, "{} -> {}", first.name(), second.name());
    }

    // One test per cell of Table 3 (DESIGN.md §4).
    #[test] fn o2o_o2o() { assert_cell(OneToOne, OneToOne, Green, Some(OneToOne)); }
    #[test] fn o2o_o2m() { assert_cell(OneToOne, OneToMany, Green, Some(OneToMany)); }
    #[test] fn o2o_m2m() { assert_cell(OneToOne, ManyToMany, Green, Some(ManyToMany)); }
    #[test] fn o2o_reorg() { assert_cell(OneToOne, Reorganize, Green, Some(Reorganize)); }
    #[test] fn o2o_shuffle() { assert_cell(OneToOne, Shuffle, Green, Some(Shuffle)); }
    #[test] fn o2m_o2o() { assert_cell(OneToMany, OneToOne, Green, Some(OneToMany)); }
    #[test] fn o2m_o2m() { assert_cell(OneToMany, OneToMany, Yellow, Some(OneToMany)); }
    #[test] fn o2m_m2m() { assert_cell(OneToMany, ManyToMany, Red, None); }
    #[test] fn o2m_reorg() { assert_cell(OneToMany, Reorganize, Yellow, Some(OneToMany)); }
    #[test] fn o2m_shuffle() { assert_cell(OneToMany, Shuffle, Yellow, Some(OneToMany)); }
    #[test] fn m2m_o2o() { assert_cell(ManyToMany, OneToOne, Green, Some(ManyToMany)); }
    #[test] fn m2m_o2m() { assert_cell(ManyToMany, OneToMany, Yellow, Some(ManyToMany)); }
    #[test] fn m2m_m2m() { assert_cell(ManyToMany, ManyToMany, Red, None); }
    #[test] fn m2m_reorg() { assert_cell(ManyToMany, Reorganize, Yellow, Some(ManyToMany)); }
    #[test] fn m2m_shuffle() { assert_cell(ManyToMany, Shuffle, Yellow, Some(ManyToMany)); }
    #[test] fn reorg_o2o() { assert_cell(Reorganize, OneToOne, Green, Some(Reorganize)); }
    #[test] fn reorg_o2m() { assert_cell(Reorganize, OneToMany, Yellow, Some(OneToMany)); }
    #[test] fn reorg_m2m() { assert_cell(Reorganize, ManyToMany, Yellow, Some(ManyToMany)); }
    #[test] fn reorg_reorg() { assert_cell(Reorganize, Reorganize, Green, Some(Reorganize)); }
    #[test] fn reorg_shuffle() { assert_cell(Reorganize, Shuffle, Green, Some(Reorganize)); }
    #[test] fn shuffle_o2o() { assert_cell(Shuffle, OneToOne, Green, Some(Shuffle)); }
    #[test] fn shuffle_o2m() { assert_cell(Shuffle, OneToMany, Yellow, Some(OneToMany)); }
    #[test] fn shuffle_m2m() { assert_cell(Shuffle, ManyToMany, Yellow, Some(ManyToMany)); }
    #[test] fn shuffle_reorg() { assert_cell(Shuffle, Reorganize, Green, Some(Reorganize)); }
    #[test] fn shuffle_shuffle() { assert_cell(Shuffle, Shuffle, Green, Some(Shuffle)); }

    #[test]
    fn exactly_two_red_cells_as_the_paper_counts() {
        let red = FUSION_TABLE.iter().flatten().filter(|c| c.colour == Red).count();
        assert_eq!(red, 2);
    }
}
