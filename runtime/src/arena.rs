//! Safe, disjoint views of the arena for one op: its operands and its output (and of the
//! parameter buffer's derived tensors, for `prepare`).
//!
//! The memory plan never places an op's output over one of its live operands, so the
//! output range can be split off mutably and the operands read from what is left.

/// Borrows the `reads` ranges immutably and the `write` range mutably.
///
/// Ranges are `(offset, len)` in floats. Precondition (guaranteed by the planner): no read
/// range overlaps the write range, and all lie inside the arena.
pub fn regions<'a, const N: usize>(
    arena: &'a mut [f32],
    reads: [(usize, usize); N],
    write: (usize, usize),
) -> ([&'a [f32]; N], &'a mut [f32]) {
    let (offset, len) = write;
    let (before, rest) = arena.split_at_mut(offset);
    let (out, after) = rest.split_at_mut(len);
    let (before, after): (&'a [f32], &'a [f32]) = (before, after);
    let views = reads.map(|(o, l)| {
        if o + l <= offset {
            &before[o..o + l]
        } else {
            debug_assert!(o >= offset + len, "arena read overlaps the write");
            let start = o - (offset + len);
            &after[start..start + l]
        }
    });
    (views, out)
}

/// Borrows the `reads` ranges immutably (the op writes outside the arena).
pub fn reads<const N: usize>(arena: &[f32], reads: [(usize, usize); N]) -> [&[f32]; N] {
    reads.map(|(o, l)| &arena[o..o + l])
}

/// Borrows `N` disjoint ranges mutably, given in increasing order of offset.
///
/// Ranges are `(offset, len)` in floats. Precondition (guaranteed by the generated code):
/// they do not overlap, come in increasing order and lie inside `buffer`.
pub fn disjoint<const N: usize>(
    buffer: &mut [f32],
    ranges: [(usize, usize); N],
) -> [&mut [f32]; N] {
    let mut rest = buffer;
    let mut at = 0;
    ranges.map(|(offset, len)| {
        let tail = core::mem::take(&mut rest);
        let (_, tail) = tail.split_at_mut(offset - at);
        let (view, tail) = tail.split_at_mut(len);
        rest = tail;
        at = offset + len;
        view
    })
}

/// `view` as the array of exactly `N` floats a fused block takes: the length is checked
/// once here, so the block's loops index the array without bounds checks.
///
/// Precondition (guaranteed by the generated code): `view.len() == N`.
#[inline(always)]
#[track_caller]
pub fn fixed<const N: usize>(view: &[f32]) -> &[f32; N] {
    match view.try_into() {
        Ok(array) => array,
        Err(_) => length_mismatch(view.len(), N),
    }
}

/// [`fixed`] for the view a block writes.
#[inline(always)]
#[track_caller]
pub fn fixed_mut<const N: usize>(view: &mut [f32]) -> &mut [f32; N] {
    let len = view.len();
    match view.try_into() {
        Ok(array) => array,
        Err(_) => length_mismatch(len, N),
    }
}

#[cold]
#[track_caller]
fn length_mismatch(found: usize, expected: usize) -> ! {
    panic!("a fused block got a view of {found} floats where it takes {expected}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_land_on_both_sides_of_the_write() {
        let mut arena: [f32; 10] = core::array::from_fn(|i| i as f32);
        let ([a, b], out) = regions(&mut arena, [(0, 2), (7, 3)], (3, 4));
        assert_eq!(a, &[0.0, 1.0]);
        assert_eq!(b, &[7.0, 8.0, 9.0]);
        out.fill(-1.0);
        assert_eq!(arena[3..7], [-1.0; 4]);
    }

    #[test]
    fn fixed_views_keep_their_data() {
        let mut buffer = [1.0f32, 2.0, 3.0];
        let a: &[f32; 2] = fixed(&buffer[1..]);
        assert_eq!(a, &[2.0, 3.0]);
        let b: &mut [f32; 3] = fixed_mut(&mut buffer[..]);
        b[0] = 5.0;
        assert_eq!(buffer[0], 5.0);
    }

    #[test]
    #[should_panic(expected = "of 2 floats where it takes 3")]
    fn a_view_of_another_length_is_refused() {
        let buffer = [0.0f32; 2];
        let _: &[f32; 3] = fixed(&buffer[..]);
    }

    #[test]
    fn disjoint_views_cover_their_ranges() {
        let mut buffer = [0.0f32; 10];
        let [a, b] = disjoint(&mut buffer, [(1, 2), (6, 3)]);
        a.fill(1.0);
        b.fill(2.0);
        assert_eq!(buffer, [0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]);
    }
}
