//! Robustness: `expand` never panics, whatever tokens it is given, and always answers
//! with either generated code or `compile_error!`s.
//!
//! Inputs: every prefix (by token count, groups closed automatically) of the reference
//! models' source, plus a few hundred deterministic random mutations of it (tokens
//! deleted, duplicated or swapped; numbers replaced with 0, -1 or huge values).

use std::panic::{catch_unwind, AssertUnwindSafe};

use dnnfusion_test_support::Rng;
use proc_macro2::{Delimiter, Group, Literal, Punct, Spacing, TokenStream, TokenTree};

/// A copy of the DSL text of `models/src/reference.rs`.
const REFERENCE: &str = r#"
    /// MLP 784-512-256-10 with ReLU, softmax over the classes.
    pub model Mlp(input: [1, 784]) -> [1, 10] {
        let fc1 = linear(input, 512);
        let fc2 = linear(relu(fc1), 256);
        let fc3 = linear(relu(fc2), 10);
        softmax(fc3, axis = -1)
    }

    /// LeNet-5 style: two 5x5 conv + ReLU + 2x2 max-pool stages, three linear layers.
    pub model LeNet(input: [1, 1, 28, 28]) -> [1, 10] {
        let conv1 = conv2d(input, 6, kernel = 5);
        let p1 = max_pool2d(relu(conv1), 2);
        let conv2 = conv2d(p1, 16, kernel = 5);
        let p2 = max_pool2d(relu(conv2), 2);
        let fc1 = linear(flatten(p2), 120);
        let fc2 = linear(relu(fc1), 84);
        linear(relu(fc2), 10, key = "fc3")
    }

    /// A post-LN BERT encoder layer written with plain ops (no fused attention).
    block encoder_layer(x: [B, S, D], heads = 2, ffn = 512) {
        let query = linear(x, D);
        let key = linear(x, D);
        let value = linear(x, D);
        let q = transpose(reshape(query, [B, S, heads, D / heads]), 1, 2);
        let k = transpose(reshape(key, [B, S, heads, D / heads]), 1, 2);
        let v = transpose(reshape(value, [B, S, heads, D / heads]), 1, 2);
        let scores = matmul(q, transpose(k, -1, -2)) * (1.0 / sqrt(D / heads));
        let probs = softmax(scores, axis = -1);
        let ctx = reshape(transpose(matmul(probs, v), 1, 2), [B, S, D]);
        let attn_out = linear(ctx, D);
        let ln1 = layer_norm(x + attn_out, eps = 1e-12);
        let ffn_in = linear(ln1, ffn);
        let ffn_out = linear(gelu(ffn_in), D);
        layer_norm(ln1 + ffn_out, eps = 1e-12, key = "ln2")
    }

    /// bert-tiny-like encoder: 2 layers, hidden 128, 2 heads, FFN 512, on embeddings.
    pub model BertTiny(input: [1, 128, 128]) -> [1, 128, 128] {
        let mut h = input;
        for i in 0..2 {
            #[key = "layers.{i}"]
            h = encoder_layer(h);
        }
        h
    }

    /// 3x3 conv without bias, batch norm, ReLU (PyTorch `Sequential` keys 0 and 1).
    block conv_bn_relu(x, channels) {
        #[key = "0"] let conv = conv2d(x, channels, kernel = 3, padding = 1, bias = false);
        #[key = "1"] let bn = batch_norm(conv);
        relu(bn)
    }

    /// Two conv-bn-relu stages, keys `a` and `b`.
    block double_conv(x, channels) {
        let a = conv_bn_relu(x, channels);
        let b = conv_bn_relu(a, channels);
        b
    }

    /// 2-level UNet: 3 -> 2 classes at 128x128, transposed-conv upsampling, concat skips.
    pub model UNetSmall(input: [1, 3, 128, 128]) -> [1, 2, 128, 128] {
        let enc1 = double_conv(input, 16);
        let enc2 = double_conv(max_pool2d(enc1, 2), 32);
        let mid = double_conv(max_pool2d(enc2, 2), 64);
        let up2 = conv_transpose2d(mid, 32, kernel = 2, stride = 2);
        let dec2 = double_conv(concat([up2, enc2], axis = 1), 32);
        let up1 = conv_transpose2d(dec2, 16, kernel = 2, stride = 2);
        let dec1 = double_conv(concat([up1, enc1], axis = 1), 16);
        conv2d(dec1, 2, kernel = 1, key = "head")
    }
"#;

/// A token stream flattened to a sequence, so prefixes and mutations can cut groups.
#[derive(Clone, Debug)]
enum Flat {
    Open(Delimiter),
    Close,
    Leaf(TokenTree),
}

fn flatten(stream: TokenStream, out: &mut Vec<Flat>) {
    for tt in stream {
        match tt {
            TokenTree::Group(g) => {
                out.push(Flat::Open(g.delimiter()));
                flatten(g.stream(), out);
                out.push(Flat::Close);
            }
            leaf => out.push(Flat::Leaf(leaf)),
        }
    }
}

/// Rebuilds a stream: unmatched closes are dropped, groups left open are closed.
fn rebuild(flat: &[Flat]) -> TokenStream {
    let mut stack: Vec<(Delimiter, Vec<TokenTree>)> = vec![(Delimiter::None, Vec::new())];
    for f in flat {
        match f {
            Flat::Open(d) => stack.push((*d, Vec::new())),
            Flat::Close => {
                if stack.len() > 1 {
                    close(&mut stack);
                }
            }
            Flat::Leaf(tt) => {
                if let Some(top) = stack.last_mut() {
                    top.1.push(tt.clone());
                }
            }
        }
    }
    while stack.len() > 1 {
        close(&mut stack);
    }
    stack
        .pop()
        .map(|(_, tts)| tts.into_iter().collect())
        .unwrap_or_default()
}

fn close(stack: &mut Vec<(Delimiter, Vec<TokenTree>)>) {
    if let Some((d, tts)) = stack.pop() {
        let group = Group::new(d, tts.into_iter().collect());
        if let Some(top) = stack.last_mut() {
            top.1.push(TokenTree::Group(group));
        }
    }
}

fn is_number(f: &Flat) -> bool {
    matches!(f, Flat::Leaf(TokenTree::Literal(l)) if l.to_string().starts_with(|c: char| c.is_ascii_digit()))
}

const HUGE: &[&str] = &[
    "9223372036854775807",
    "18446744073709551615",
    "99999999999999999999999",
    "4294967296",
    "1000000000000",
    "65536",
    "1e308",
    "1e400",
];

fn replacement(rng: &mut Rng) -> Vec<Flat> {
    match rng.below(3) {
        0 => vec![Flat::Leaf(Literal::i64_unsuffixed(0).into())],
        1 => vec![
            Flat::Leaf(Punct::new('-', Spacing::Alone).into()),
            Flat::Leaf(Literal::i64_unsuffixed(1).into()),
        ],
        _ => {
            let text = HUGE[rng.below(HUGE.len())];
            let lit: TokenStream = text.parse().unwrap_or_default();
            lit.into_iter().map(Flat::Leaf).collect()
        }
    }
}

fn mutate(base: &[Flat], rng: &mut Rng) -> Vec<Flat> {
    let mut v = base.to_vec();
    for _ in 0..1 + rng.below(3) {
        if v.is_empty() {
            break;
        }
        let i = rng.below(v.len());
        match rng.below(4) {
            0 => {
                v.remove(i);
            }
            1 => {
                let t = v[i].clone();
                v.insert(i, t);
            }
            2 => {
                let j = if rng.below(2) == 0 {
                    (i + 1).min(v.len() - 1)
                } else {
                    rng.below(v.len())
                };
                v.swap(i, j);
            }
            _ => {
                let numbers: Vec<usize> = (0..v.len()).filter(|&k| is_number(&v[k])).collect();
                // a draw even when there is no number, as the seeded stream always had
                if let Some(&k) = numbers.get(rng.below(numbers.len().max(1))) {
                    let r = replacement(rng);
                    v.splice(k..=k, r);
                }
            }
        }
    }
    v
}

/// The messages of the `compile_error!`s in an expansion (empty when it is code).
fn compile_errors(out: &TokenStream) -> Vec<String> {
    let tts: Vec<TokenTree> = out.clone().into_iter().collect();
    let mut messages = Vec::new();
    for (i, tt) in tts.iter().enumerate() {
        if let TokenTree::Ident(id) = tt {
            if id == "compile_error" {
                let bang =
                    matches!(tts.get(i + 1), Some(TokenTree::Punct(p)) if p.as_char() == '!');
                let arg = match tts.get(i + 2) {
                    Some(TokenTree::Group(g)) => g.stream().into_iter().next(),
                    _ => None,
                };
                let message = match arg {
                    Some(TokenTree::Literal(l)) if bang => l.to_string(),
                    _ => panic!("malformed compile_error! in {out}"),
                };
                messages.push(message);
            }
        }
    }
    messages
}

/// Runs `expand` on one input: no panic, and either code (`Ok(true)`) or well-formed
/// errors (`Ok(false)`).
fn check_one(input: TokenStream, what: &str) -> Result<bool, String> {
    let result = catch_unwind(AssertUnwindSafe(|| {
        dnnfusion_compiler::expand(input.clone())
    }));
    let out = match result {
        Ok(out) => out,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            return Err(format!("expand panicked ({msg}) on {what}:\n{input}"));
        }
    };
    let errors = catch_unwind(AssertUnwindSafe(|| compile_errors(&out)))
        .map_err(|_| format!("malformed compile_error! on {what}:\n{out}"))?;
    if errors.is_empty() {
        // code: the same input must compile without errors
        let ok = catch_unwind(AssertUnwindSafe(|| {
            dnnfusion_compiler::compile(input.clone()).is_ok()
        }))
        .unwrap_or(false);
        if !ok {
            return Err(format!(
                "expand gave code without compile_error! but compile failed on {what}:\n{input}"
            ));
        }
        return Ok(true);
    }
    for m in &errors {
        // a string literal: "..." with a lowercase (or non-letter) first character
        let text = m.trim_start_matches('"');
        if !m.starts_with('"') || text.len() <= 1 {
            return Err(format!("empty error message on {what}: {m}"));
        }
        if text.starts_with(|c: char| c.is_uppercase()) {
            return Err(format!(
                "error message is not lowercase on {what}: {m}\ninput: {input}"
            ));
        }
    }
    Ok(false)
}

fn expand_checked(input: TokenStream, what: &str) -> bool {
    check_one(input, what).unwrap_or_else(|e| panic!("{e}"))
}

fn reference_tokens() -> Vec<Flat> {
    let stream: TokenStream = REFERENCE.parse().expect("the reference source lexes");
    let mut flat = Vec::new();
    flatten(stream, &mut flat);
    flat
}

#[test]
fn the_reference_source_compiles() {
    let flat = reference_tokens();
    assert!(
        expand_checked(rebuild(&flat), "the whole source"),
        "the reference models must compile"
    );
}

#[test]
fn every_prefix_gives_code_or_errors() {
    let flat = reference_tokens();
    let mut errors = 0;
    for n in 0..=flat.len() {
        if !expand_checked(rebuild(&flat[..n]), &format!("the prefix of {n} tokens")) {
            errors += 1;
        }
    }
    assert!(
        errors > flat.len() / 2,
        "most prefixes are incomplete and must fail"
    );
    assert!(
        errors < flat.len() + 1,
        "the prefixes ending after a complete item compile"
    );
}

#[test]
fn random_mutations_give_code_or_errors() {
    let flat = reference_tokens();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut code = 0;
    for case in 0..400 {
        let mutated = mutate(&flat, &mut rng);
        if expand_checked(rebuild(&mutated), &format!("mutation {case}")) {
            code += 1;
        }
    }
    // both outcomes are exercised
    assert!(code > 0 && code < 400, "{code} of 400 mutations compiled");
}

/// Hand-written inputs aimed at arithmetic overflow and degenerate shapes.
const HOSTILE: &[&str] = &[
    "pub model M(x: [4294967296, 4294967296]) -> [1] { x }",
    "pub model M(x: [4294967296, 4294967296, 4294967296]) -> [1] { relu(x) }",
    "pub model M(x: [1, 4]) -> [1, 4] { reshape(x, [4294967296, 4294967296, 4294967296]) }",
    "pub model M(x: [1, 4]) -> [1, 4] { reshape(x, [-1, 4294967296, 4294967296, 4294967296]) }",
    "pub model M(x: [1, 4]) -> [1, 4] { let fc = linear(x, 9223372036854775807); fc }",
    "pub model M(x: [1, 4]) -> [1, 4] { let fc = linear(x, 4294967296); let g = linear(fc, 4294967296); g }",
    "pub model M(x: [1, 1, 4, 4]) -> [1, 1, 4, 4] { let c = conv2d(x, 1, kernel = 1, padding = 9223372036854775807); c }",
    "pub model M(x: [1, 1, 4, 4]) -> [1, 1, 4, 4] { let c = conv2d(x, 1, kernel = 9223372036854775807); c }",
    "pub model M(x: [1, 1, 4, 4]) -> [1, 1, 4, 4] { let c = conv2d(x, 1, kernel = 2, dilation = 9223372036854775807); c }",
    "pub model M(x: [1, 1, 4, 4]) -> [1, 1, 4, 4] { let c = conv2d(x, 1, kernel = 2, stride = 9223372036854775807); c }",
    "pub model M(x: [1, 1, 4, 4]) -> [1, 1, 4, 4] { let c = conv_transpose2d(x, 1, kernel = 9223372036854775807, stride = 9223372036854775807); c }",
    "pub model M(x: [1, 1, 4, 4]) -> [1, 1, 4, 4] { let c = conv_transpose2d(x, 1, kernel = 2, padding = 9223372036854775807); c }",
    "pub model M(x: [1, 1, 4, 4]) -> [1, 1, 4, 4] { let c = conv_transpose2d(x, 1, kernel = 2, output_padding = 9223372036854775807, stride = 9223372036854775807); c }",
    "pub model M(x: [1, 1, 4, 4]) -> [1, 1, 4, 4] { max_pool2d(x, 9223372036854775807, padding = 4611686018427387904) }",
    "pub model M(x: [1, 1, 4, 4]) -> [1, 1, 4, 4] { max_pool2d(x, 2, ceil_mode = true, stride = 9223372036854775807) }",
    "pub model M(x: [1, 1, 4, 4]) -> [1, 1, 4, 4] { avg_pool2d(x, 3, padding = 1, ceil_mode = true, stride = 9223372036854775807) }",
    "pub model M(x: [1, 1, 4, 4]) -> [1, 1, 4, 4] { pad(x, [9223372036854775807, 9223372036854775807]) }",
    "pub model M(x: [1, 1, 4, 4]) -> [1, 1, 4, 4] { pad(x, [4, 4], mode = \"reflect\") }",
    "pub model M(x: [1, 4]) -> [1, 4] { expand(x, [9223372036854775807, 9223372036854775807, 4]) }",
    "pub model M(x: [1, 4]) -> [1, 4] { slice(x, 1, -9223372036854775807, 9223372036854775807, 9223372036854775807) }",
    "pub model M(x: [1, 4]) -> [1, 4] { slice(x, -9223372036854775807, 0, 1) }",
    "pub model M(x: [1, 4]) -> [1, 4] { softmax(x, axis = -9223372036854775807) }",
    "pub model M(x: [1, 4]) -> [1, 4] { let (a, b) = split(x, [9223372036854775807, 9223372036854775807], axis = 1); a }",
    "pub model M(x: [1, 4]) -> [1, 4] { let (a, b) = split(x, 9223372036854775807, axis = 1); a }",
    "pub model M(x: [1, 4]) -> [1, 4] { let e = embedding(x, 4294967296, 4294967296); e }",
    "pub model M(x: [1, 4]) -> [1, 4] { let p = param([4294967296, 4294967296, 4294967296]); x + p }",
    "pub model M(x: [1, 1, 4, 4]) -> [1, 1, 4, 4] { resize(x, scale = 1e300) }",
    "pub model M(x: [1, 1, 4, 4]) -> [1, 1, 4, 4] { resize(x, size = [9223372036854775807, 9223372036854775807]) }",
    "pub model M(x: [1, 4]) -> [1, 4] { x * (-(0 - 9223372036854775807 - 1)) }",
    "pub model M(x: [1, 4]) -> [1, 4] { x * ((0 - 9223372036854775807 - 1) / -1) }",
    "pub model M(x: [1, 4]) -> [1, 4] { x * ((0 - 9223372036854775807 - 1) % -1) }",
    "pub model M(x: [1, 4]) -> [1, 4] { let mut h = x; for i in 0 - 9223372036854775807 - 1..9223372036854775807 { h = relu(h); } h }",
    "pub model M(x: [1, 4]) -> [1, 4] { let mut h = x; for i in 9223372036854775807..0 - 9223372036854775807 { h = relu(h); } h }",
    "block b(x: [B, 9223372036854775807]) { x } pub model M(x: [1, 4]) -> [1, 4] { b(x) }",
    "block b(x: [B, 0 - 1]) { x } pub model M(x: [1, 4]) -> [1, 4] { b(x) }",
    "block b(x: [B, D]) { x } pub model M(x: [1, 4]) -> [1, 4] { b(x) } block b(y) { y }",
    "pub model M(x: [1, 4]) -> [1, 4] { let l = layer_norm(x, dims = 9223372036854775807); l }",
    "pub model M(x: [1, 4, 2, 2]) -> [1, 4, 2, 2] { let g = group_norm(x, 9223372036854775807); g }",
    "pub model M(x: [1, 4]) -> [1, 4] { flatten(x, start = 9223372036854775807) }",
    "pub model M(x: [1, 4]) -> [1, 4] { unsqueeze(x, 9223372036854775807) }",
    "pub model M(x: [1, 4]) -> [1, 4] { reduce_sum(x, axes = [0, 0]) }",
    "pub model M(x: [1, 4]) -> [1, 4] { gather(x, x, axis = 1) }",
    "pub model M(x: [1, 4]) -> [1, 4] { x * 1e400 }",
    "pub model M(x: [1, 4]) -> [1, 4] { x * 99999999999999999999999 }",
    "pub model M(x: [1, 4]) -> [] { reduce_sum(x) }",
    "pub model M() -> [1] { param([1], key = \"p\") }",
    "pub model M(x: [1, 4]) -> () { x }",
    "pub model M(x: [1, 4]) -> [1, 4] { () }",
    "pub model M(x: [1, 4]) -> [1, 4] { (x,) }",
    "pub model M(x: [1, 4]) -> [1, 4] { #[key = \"{\"] let fc = linear(x, 4); fc }",
    "pub model fn(x: [1, 4]) -> [1, 4] { x }",
    "pub model _(x: [1, 4]) -> [1, 4] { x }",
    "pub model M(x: [65536, 65536]) -> [65536, 65536] { relu(x) + x }",
    "pub model M(x: [65536, 65536]) -> [65536, 65536] { let mut h = x; for i in 0..4096 { h = relu(h) * 2; } h }",
    "pub model M(x: [65536, 1], y: [1, 65536]) -> [65536, 65536] { x + y }",
    "pub model M(x: [65536, 1], y: [1, 131072]) -> [65536, 131072] { x + y }",
    "pub model M(x: [1, 4]) -> [1, 4] { unsqueeze(unsqueeze(unsqueeze(unsqueeze(unsqueeze(unsqueeze(unsqueeze(x, 0), 0), 0), 0), 0), 0), 0) }",
    "pub model M(x: [1, 4]) -> [1, 4] { expand(x, [1, 1, 1, 1, 1, 1, 1, 1, 1, 4]) }",
    "pub model M(x: [1, 4]) -> [1, 4] { reshape(x, [1, 1, 1, 1, 1, 1, 1, 1, 1, 4]) }",
    "pub model M(x: [1, 1, 4, 4]) -> [1, 1, 4, 4] { resize(x, scale = 100000) }",
    "pub model M(x: [1, 4]) -> [1, 4] { let p = param([]); x + p }",
    "model",
    "pub",
    "#[doc = 1] model M(x: [1]) -> [1] { x }",
];

#[test]
fn hostile_inputs_give_code_or_errors() {
    let failures: Vec<String> = HOSTILE
        .iter()
        .filter_map(|source| {
            let tokens: TokenStream = source.parse().expect("hostile inputs lex");
            check_one(tokens, source).err()
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
