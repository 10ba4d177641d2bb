//! Index arithmetic as the generated code shows it: an [`Ix`] simplified with what the
//! loop variables' ranges prove, printed with the precedence a person would use.
//!
//! Variable `k` ranges over `0..extents[k]` (the block's output shape). Simplifying folds
//! constants, drops `* 1`, `+ 0`, `x * 0` and axes of extent 1, merges `x / a / b`, and
//! removes a `% n` or `/ n` the ranges make unnecessary:
//!
//! ```text
//!   extents [1, 128, 2, 64]
//!   (((((i0 * 16384) + (i1 * 128)) + (i2 * 64)) + i3) % 128)   ->   i2 * 64 + i3
//! ```
//!
//! Every step holds for the natural numbers the indices are (`usize`, no overflow), so
//! the simplified index reads the same element at every point of the ranges
//! (`simplified_indices_agree_everywhere` checks this on random expressions).

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};

use crate::element::{Ex, Ix};

/// `ix` simplified over variables ranging in `0..extents[k]`.
pub(super) fn simplify(ix: &Ix, extents: &[usize]) -> Ix {
    match ix {
        Ix::Var(k) => match extents.get(*k) {
            Some(1) => Ix::Const(0),
            _ => Ix::Var(*k),
        },
        Ix::Const(c) => Ix::Const(*c),
        Ix::Add(a, b) => {
            let mut sum = Affine::of(&simplify(a, extents));
            sum.add(Affine::of(&simplify(b, extents)));
            sum.merge_quotient_remainder();
            sum.into_ix()
        }
        Ix::Mul(a, c) => {
            let mut sum = Affine::of(&simplify(a, extents));
            sum.scale(*c);
            sum.into_ix()
        }
        Ix::Div(a, c) => div(simplify(a, extents), *c, extents),
        Ix::Rem(a, c) => rem(simplify(a, extents), *c, extents),
        Ix::Sub(a, c) => {
            let mut sum = Affine::of(&simplify(a, extents));
            if sum.constant >= *c {
                // the constant part alone covers what is subtracted
                sum.constant -= c;
                sum.into_ix()
            } else {
                Ix::Sub(Box::new(sum.into_ix()), *c)
            }
        }
        Ix::Reflect { index, before, len } => Ix::Reflect {
            index: Box::new(simplify(index, extents)),
            before: *before,
            len: *len,
        },
        Ix::Clamp { index, before, len } => Ix::Clamp {
            index: Box::new(simplify(index, extents)),
            before: *before,
            len: *len,
        },
    }
}

/// `a / c` for a simplified `a`: terms whose coefficient `c` divides leave the quotient
/// exactly, the rest is divided only when it can reach `c`.
fn div(a: Ix, c: usize, extents: &[usize]) -> Ix {
    if c <= 1 {
        return a;
    }
    if let Ix::Div(inner, d) = a {
        return div(*inner, d.saturating_mul(c), extents);
    }
    let (mut exact, rest) = Affine::of(&a).split(c);
    exact.scale_down(c);
    let rest = rest.into_ix();
    if max(&rest, extents) >= c {
        exact.add(Affine::of(&Ix::Div(Box::new(rest), c)));
    }
    exact.into_ix()
}

/// `a % c` for a simplified `a`: multiples of `c` drop out, and the remainder goes when
/// what is left is always below `c`.
fn rem(a: Ix, c: usize, extents: &[usize]) -> Ix {
    if c <= 1 {
        return Ix::Const(0);
    }
    let a = match a {
        // (x % d) % c is x % c when c divides d
        Ix::Rem(inner, d) if d % c == 0 => *inner,
        other => other,
    };
    let (_, rest) = Affine::of(&a).split(c);
    let rest = rest.into_ix();
    if max(&rest, extents) < c {
        rest
    } else {
        Ix::Rem(Box::new(rest), c)
    }
}

/// The largest value `ix` takes over the ranges (saturating).
pub(super) fn max(ix: &Ix, extents: &[usize]) -> usize {
    match ix {
        Ix::Var(k) => extents.get(*k).map_or(usize::MAX, |d| d.saturating_sub(1)),
        Ix::Const(c) => *c,
        Ix::Add(a, b) => max(a, extents).saturating_add(max(b, extents)),
        Ix::Mul(a, c) => max(a, extents).saturating_mul(*c),
        Ix::Div(a, c) => max(a, extents) / (*c).max(1),
        Ix::Rem(a, c) => max(a, extents).min(c.saturating_sub(1)),
        Ix::Sub(a, c) => max(a, extents).saturating_sub(*c),
        Ix::Reflect { len, .. } | Ix::Clamp { len, .. } => len.saturating_sub(1),
    }
}

/// The smallest value `ix` takes over the ranges.
pub(super) fn min(ix: &Ix, extents: &[usize]) -> usize {
    match ix {
        Ix::Var(_) | Ix::Reflect { .. } | Ix::Clamp { .. } => 0,
        Ix::Const(c) => *c,
        Ix::Add(a, b) => min(a, extents).saturating_add(min(b, extents)),
        Ix::Mul(a, c) => min(a, extents).saturating_mul(*c),
        Ix::Div(a, c) => min(a, extents) / (*c).max(1),
        Ix::Rem(a, c) if max(a, extents) < *c => min(a, extents),
        Ix::Rem(..) => 0,
        Ix::Sub(a, c) => min(a, extents).saturating_sub(*c),
    }
}

/// `sum of coefficient * term + constant`, terms being variables or expressions that are
/// not sums (`x / c`, `x % c`, ...), each term once.
#[derive(Clone, Debug, Default)]
struct Affine {
    terms: Vec<(Ix, usize)>,
    constant: usize,
}

impl Affine {
    /// The sum of a simplified index.
    fn of(ix: &Ix) -> Affine {
        let mut sum = Affine::default();
        match ix {
            Ix::Const(c) => sum.constant = *c,
            Ix::Add(a, b) => {
                sum = Affine::of(a);
                sum.add(Affine::of(b));
            }
            Ix::Mul(a, c) => {
                sum = Affine::of(a);
                sum.scale(*c);
            }
            other => sum.terms.push((other.clone(), 1)),
        }
        sum
    }

    fn add(&mut self, other: Affine) {
        self.constant = self.constant.saturating_add(other.constant);
        for (term, c) in other.terms {
            match self.terms.iter_mut().find(|(t, _)| *t == term) {
                Some((_, own)) => *own = own.saturating_add(c),
                None => self.terms.push((term, c)),
            }
        }
    }

    fn scale(&mut self, c: usize) {
        self.constant = self.constant.saturating_mul(c);
        for (_, own) in &mut self.terms {
            *own = own.saturating_mul(c);
        }
    }

    /// Divides every coefficient (all multiples of `c`).
    fn scale_down(&mut self, c: usize) {
        self.constant /= c;
        for (_, own) in &mut self.terms {
            *own /= c;
        }
    }

    /// (the part that is a multiple of `c`, the rest).
    fn split(self, c: usize) -> (Affine, Affine) {
        let mut exact = Affine {
            terms: Vec::new(),
            constant: self.constant - self.constant % c,
        };
        let mut rest = Affine {
            terms: Vec::new(),
            constant: self.constant % c,
        };
        for (term, k) in self.terms {
            if k % c == 0 {
                exact.terms.push((term, k));
            } else {
                rest.terms.push((term, k));
            }
        }
        (exact, rest)
    }

    /// `(x / a) * a * c + (x % a) * c` -> `x * c`, pair by pair (an index taken apart
    /// into two axes and put back together: a row epilogue over merged axes).
    fn merge_quotient_remainder(&mut self) {
        loop {
            let pair = self.terms.iter().enumerate().find_map(|(i, (q, cq))| {
                let Ix::Div(x, a) = q else { return None };
                self.terms
                    .iter()
                    .position(|(r, cr)| {
                        matches!(r, Ix::Rem(y, b) if y == x && b == a)
                            && cr.checked_mul(*a) == Some(*cq)
                    })
                    .map(|j| (i, j, (**x).clone()))
            });
            let Some((i, j, x)) = pair else { return };
            let Some(&(_, c)) = self.terms.get(j) else {
                return;
            };
            let (first, second) = (i.max(j), i.min(j));
            self.terms.remove(first);
            self.terms.remove(second);
            let mut whole = Affine::of(&x);
            whole.scale(c);
            self.add(whole);
        }
    }

    /// Back to an index: largest coefficients first (the outer axes), the constant last.
    fn into_ix(mut self) -> Ix {
        self.terms.retain(|(_, c)| *c != 0);
        self.terms.sort_by_key(|(_, c)| std::cmp::Reverse(*c));
        let mut ix: Option<Ix> = None;
        for (term, c) in self.terms {
            let term = if c == 1 {
                term
            } else {
                Ix::Mul(Box::new(term), c)
            };
            ix = Some(match ix {
                None => term,
                Some(sum) => Ix::Add(Box::new(sum), Box::new(term)),
            });
        }
        match (ix, self.constant) {
            (None, c) => Ix::Const(c),
            (Some(sum), 0) => sum,
            (Some(sum), c) => Ix::Add(Box::new(sum), Box::new(Ix::Const(c))),
        }
    }
}

/// Every index of `ex` simplified, and range tests the ranges decide replaced by the
/// branch they take.
pub(super) fn simplify_ex(ex: &mut Ex, extents: &[usize]) {
    match ex {
        Ex::Load(_, ix) => *ix = simplify(ix, extents),
        Ex::Unary(_, a) => simplify_ex(a, extents),
        Ex::Binary(_, a, b) | Ex::Prelu(a, b) => {
            simplify_ex(a, extents);
            simplify_ex(b, extents);
        }
        Ex::Select(c, a, b) => {
            simplify_ex(c, extents);
            simplify_ex(a, extents);
            simplify_ex(b, extents);
        }
        Ex::InRange {
            index,
            lo,
            hi,
            then,
            otherwise,
        } => {
            *index = simplify(index, extents);
            simplify_ex(then, extents);
            simplify_ex(otherwise, extents);
            let (low, high) = (min(index, extents), max(index, extents));
            if *lo <= low && high < *hi {
                *ex = std::mem::replace(then.as_mut(), Ex::Const(0.0));
            } else if high < *lo || low >= *hi {
                *ex = std::mem::replace(otherwise.as_mut(), Ex::Const(0.0));
            }
        }
        Ex::Anchor | Ex::Const(_) | Ex::Let(_) => {}
    }
}

/// Marks the variables `ix` reads.
pub(super) fn mark_vars(ix: &Ix, used: &mut [bool]) {
    match ix {
        Ix::Var(k) => {
            if let Some(u) = used.get_mut(*k) {
                *u = true;
            }
        }
        Ix::Const(_) => {}
        Ix::Add(a, b) => {
            mark_vars(a, used);
            mark_vars(b, used);
        }
        Ix::Mul(a, _) | Ix::Div(a, _) | Ix::Rem(a, _) | Ix::Sub(a, _) => mark_vars(a, used),
        Ix::Reflect { index, .. } | Ix::Clamp { index, .. } => mark_vars(index, used),
    }
}

/// Marks the variables `ex` reads; true when it reads the anchor's value.
pub(super) fn mark_ex(ex: &Ex, used: &mut [bool]) -> bool {
    match ex {
        Ex::Load(_, ix) => {
            mark_vars(ix, used);
            false
        }
        Ex::Anchor => true,
        Ex::Const(_) | Ex::Let(_) => false,
        Ex::Unary(_, a) => mark_ex(a, used),
        Ex::Binary(_, a, b) | Ex::Prelu(a, b) => mark_ex(a, used) | mark_ex(b, used),
        Ex::Select(c, a, b) => mark_ex(c, used) | mark_ex(a, used) | mark_ex(b, used),
        Ex::InRange {
            index,
            then,
            otherwise,
            ..
        } => {
            mark_vars(index, used);
            mark_ex(then, used) | mark_ex(otherwise, used)
        }
    }
}

/// Binding strength of an index expression's top operator.
fn level(ix: &Ix) -> u8 {
    match ix {
        Ix::Add(..) | Ix::Sub(..) => 1,
        Ix::Mul(..) | Ix::Div(..) | Ix::Rem(..) => 2,
        Ix::Var(_) | Ix::Const(_) | Ix::Reflect { .. } | Ix::Clamp { .. } => 3,
    }
}

/// `ix` as the operand of a prefix operator (`&`): parenthesized unless it is a name,
/// a constant or a call.
pub(super) fn operand_tokens(ix: &Ix) -> TokenStream {
    let t = tokens(ix);
    if level(ix) < 3 {
        quote! { (#t) }
    } else {
        t
    }
}

/// `ix` as Rust, parenthesized only where precedence needs it (`i1 * 64 + i3`).
pub(super) fn tokens(ix: &Ix) -> TokenStream {
    // the left operand keeps its own level, the right needs a stronger one
    let operand = |a: &Ix, at_least: u8| {
        let t = tokens(a);
        if level(a) < at_least {
            quote! { (#t) }
        } else {
            t
        }
    };
    let lit = |c: usize| Literal::usize_unsuffixed(c);
    match ix {
        Ix::Var(k) => {
            let v = format_ident!("i{}", k);
            quote! { #v }
        }
        Ix::Const(c) => {
            let c = lit(*c);
            quote! { #c }
        }
        Ix::Add(a, b) => {
            let (a, b) = (operand(a, 1), operand(b, 2));
            quote! { #a + #b }
        }
        Ix::Sub(a, c) => {
            let (a, c) = (operand(a, 1), lit(*c));
            quote! { #a - #c }
        }
        Ix::Mul(a, c) => {
            let (a, c) = (operand(a, 2), lit(*c));
            quote! { #a * #c }
        }
        Ix::Div(a, c) => {
            let (a, c) = (operand(a, 2), lit(*c));
            quote! { #a / #c }
        }
        Ix::Rem(a, c) => {
            let (a, c) = (operand(a, 2), lit(*c));
            quote! { #a % #c }
        }
        Ix::Reflect { index, before, len } => {
            let (a, before, len) = (tokens(index), lit(*before), lit(*len));
            quote! { ::dnnfusion::runtime::kernels::reflect_index(#a, #before, #len) }
        }
        Ix::Clamp { index, before, len } => {
            let (a, before, len) = (tokens(index), lit(*before), lit(*len));
            quote! { ::dnnfusion::runtime::kernels::clamp_index(#a, #before, #len) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dnnfusion_test_support::Rng;

    fn var(k: usize) -> Ix {
        Ix::Var(k)
    }
    fn add(a: Ix, b: Ix) -> Ix {
        Ix::Add(Box::new(a), Box::new(b))
    }
    fn mul(a: Ix, c: usize) -> Ix {
        Ix::Mul(Box::new(a), c)
    }

    #[test]
    fn the_issue_example_folds_to_two_terms() {
        // e0[(((((i0*128)+(i1*16))+(i2*8))+i3) % 16)] over [1, 8, 2, 8]
        let ix = Ix::Rem(
            Box::new(add(
                add(add(mul(var(0), 128), mul(var(1), 16)), mul(var(2), 8)),
                var(3),
            )),
            16,
        );
        let s = simplify(&ix, &[1, 8, 2, 8]);
        assert_eq!(tokens(&s).to_string(), "i2 * 8 + i3");
    }

    #[test]
    fn divisions_merge_and_vanish_when_the_range_is_below_the_divisor() {
        let ix = Ix::Div(Box::new(Ix::Div(Box::new(var(0)), 4)), 3);
        assert_eq!(tokens(&simplify(&ix, &[100])).to_string(), "i0 / 12");
        let ix = Ix::Div(Box::new(add(mul(var(0), 8), var(1))), 8);
        assert_eq!(tokens(&simplify(&ix, &[5, 8])).to_string(), "i0");
        let ix = Ix::Rem(Box::new(Ix::Div(Box::new(var(0)), 4)), 3);
        assert_eq!(tokens(&simplify(&ix, &[100])).to_string(), "i0 / 4 % 3");
        let ix = mul(add(var(1), Ix::Const(2)), 3);
        assert_eq!(tokens(&simplify(&ix, &[1, 9])).to_string(), "i1 * 3 + 6");
        let ix = Ix::Mul(Box::new(Ix::Rem(Box::new(var(0)), 3)), 4);
        assert_eq!(tokens(&simplify(&ix, &[9])).to_string(), "i0 % 3 * 4");
    }

    #[test]
    fn a_borrowed_sum_keeps_its_parentheses() {
        // `&i1 * 4 + i2` would borrow `i1` alone
        let sum = add(mul(var(1), 4), var(2));
        assert_eq!(operand_tokens(&sum).to_string(), "(i1 * 4 + i2)");
        assert_eq!(operand_tokens(&var(1)).to_string(), "i1");
    }

    /// A random index expression over `vars` variables (the tests' shared generator).
    fn random_ix(state: &mut Rng, vars: usize, depth: usize) -> Ix {
        let mut next = |n: usize| state.below(n);
        let pick = next(if depth == 0 { 2 } else { 8 });
        let c = 1 + next(20);
        match pick {
            0 => Ix::Var(next(vars)),
            1 => Ix::Const(next(40)),
            2 | 3 => add(
                random_ix(state, vars, depth - 1),
                random_ix(state, vars, depth - 1),
            ),
            4 => mul(random_ix(state, vars, depth - 1), c),
            5 => Ix::Div(Box::new(random_ix(state, vars, depth - 1)), c),
            6 => Ix::Rem(Box::new(random_ix(state, vars, depth - 1)), c),
            _ => {
                let before = next(3);
                Ix::Clamp {
                    index: Box::new(random_ix(state, vars, depth - 1)),
                    before,
                    len: c,
                }
            }
        }
    }

    #[test]
    fn a_quotient_and_its_remainder_put_back_together_are_the_index() {
        let v = || Box::new(Ix::Var(1));
        let q = |a: usize| Box::new(Ix::Div(v(), a));
        let r = |a: usize| Box::new(Ix::Rem(v(), a));
        let extents = [1, 128];
        // (v / 64) * 64 + v % 64 = v; times 3: (v / 64) * 192 + (v % 64) * 3 = v * 3
        let whole = Ix::Add(Box::new(Ix::Mul(q(64), 64)), r(64));
        assert_eq!(simplify(&whole, &extents), Ix::Var(1));
        let scaled = Ix::Add(Box::new(Ix::Mul(q(64), 192)), Box::new(Ix::Mul(r(64), 3)));
        assert_eq!(simplify(&scaled, &extents), Ix::Mul(v(), 3));
        // other divisors or coefficients stay apart
        for ix in [
            Ix::Add(Box::new(Ix::Mul(q(64), 64)), r(32)),
            Ix::Add(Box::new(Ix::Mul(q(64), 32)), r(64)),
        ] {
            let s = simplify(&ix, &extents);
            assert!(matches!(s, Ix::Add(..)), "{ix:?} -> {s:?}");
            for p in 0..128 {
                assert_eq!(ix.eval(&[0, p]), s.eval(&[0, p]));
            }
        }
    }

    #[test]
    fn simplified_indices_agree_everywhere() {
        let mut state = Rng::new(7);
        let extents = [1, 3, 4, 2];
        for _ in 0..3000 {
            let ix = random_ix(&mut state, extents.len(), 4);
            let s = simplify(&ix, &extents);
            for p in 0..extents.iter().product::<usize>() {
                let vars = [0, p / 8 % 3, p / 2 % 4, p % 2];
                assert_eq!(ix.eval(&vars), s.eval(&vars), "{ix:?} -> {s:?} at {vars:?}");
                assert!(min(&s, &extents) <= s.eval(&vars), "{s:?} below its min");
                assert!(max(&s, &extents) >= s.eval(&vars), "{s:?} above its max");
            }
        }
    }
}
