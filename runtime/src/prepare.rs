//! What a generated `prepare` calls once its load-time ops have run: compaction of the
//! parameter buffer to the layout `run` reads, and the mark that makes a second
//! `prepare` of the same buffer an error instead of a silent misreading.
//!
//! ```text
//!   loading:  | w1 (packed) | b1 | w2 (folded) | b2 | derived | scratch |
//!   run:      | b1 | b2 | derived | free ...                  | mark    |
//! ```

use crate::LoadError;

/// The bits of the NaN a compacted buffer ends with (a payload no arithmetic produces).
const PREPARED_MARK: u32 = 0x7FC0_DF05;

/// Errors with [`LoadError::AlreadyPrepared`] when `buffer` ends with the mark
/// [`compact`] leaves: its loaded parameters were overwritten by a previous `prepare`.
pub fn check_unprepared(buffer: &[f32], model: &'static str) -> Result<(), LoadError> {
    match buffer.last() {
        Some(v) if v.to_bits() == PREPARED_MARK => Err(LoadError::AlreadyPrepared { model }),
        _ => Ok(()),
    }
}

/// Moves the loaded parameters `run` reads (`moves`: `(from, to, len)`, in increasing
/// order, each `to <= from`; they end at `live`) and then the `derived` floats found
/// after the `loaded` ones to `derived_start` (the cache line from `live` on, zeros
/// between), and marks the buffer's last float as prepared. The caller (generated code)
/// guarantees that the run layout is shorter than the buffer.
pub fn compact(
    buffer: &mut [f32],
    moves: &[(usize, usize, usize)],
    (loaded, derived, live, derived_start): (usize, usize, usize, usize),
) {
    for &(from, to, len) in moves {
        buffer.copy_within(from..from + len, to);
    }
    buffer.copy_within(loaded..loaded + derived, derived_start);
    // the padding up to the derived block's cache line: zeros, not stale weights (a
    // prepared buffer is the same whatever it held before)
    if let Some(padding) = buffer.get_mut(live..derived_start) {
        padding.fill(0.0);
    }
    if let Some(last) = buffer.last_mut() {
        *last = f32::from_bits(PREPARED_MARK);
    }
}

/// Clears the mark of [`compact`] from a buffer about to receive freshly loaded
/// parameters (the loaders call it).
pub fn clear_mark(buffer: &mut [f32]) {
    if let Some(last) = buffer.last_mut() {
        if last.to_bits() == PREPARED_MARK {
            *last = 0.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_moves_live_parameters_and_derived_values_and_marks_the_buffer() {
        // loaded: w [0, 1] (dead), b [2] (live), v [3, 4] (live); derived [5, 6]; scratch [7]
        let mut buffer = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
        assert_eq!(check_unprepared(&buffer, "M"), Ok(()));
        compact(&mut buffer, &[(2, 0, 1), (3, 1, 2)], (5, 2, 3, 3));
        assert_eq!(&buffer[..5], &[2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(
            check_unprepared(&buffer, "M"),
            Err(LoadError::AlreadyPrepared { model: "M" })
        );
        clear_mark(&mut buffer);
        assert_eq!(check_unprepared(&buffer, "M"), Ok(()));
        // an ordinary NaN is not the mark
        assert_eq!(check_unprepared(&[f32::NAN], "M"), Ok(()));
        // the derived block to its line at 4: zeros between; then the same past the
        // loaded floats (none dead: the block moves forward)
        let mut buffer = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
        compact(&mut buffer, &[(2, 0, 1), (3, 1, 2)], (5, 2, 3, 4));
        assert_eq!(&buffer[..6], &[2.0, 3.0, 4.0, 0.0, 5.0, 6.0]);
        let mut buffer = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
        // (the generated code leaves out the moves in place: here all of them)
        compact(&mut buffer, &[], (3, 2, 3, 4));
        assert_eq!(&buffer[..6], &[0.0, 1.0, 2.0, 0.0, 3.0, 4.0]);
    }
}
