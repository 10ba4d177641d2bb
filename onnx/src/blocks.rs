//! Repeated layers of an imported model written as `block`s, for `dnnfusion import`.
//!
//! An exported transformer or ResNet repeats the same statements once per layer, with
//! other bindings and other parameter keys. This pass finds runs of statements that
//! repeat back to back and rewrites them as one `block` and a call per repetition:
//!
//! ```text
//!   let l0_a = matmul(input, w0);        block layers(x0, w_a, key0) {
//!   let l0_b = layer_norm(l0_a,              let a = matmul(x0, w_a);
//!                 key = "l.0.ln");           let b = layer_norm(a, key = key0);
//!   let l1_a = matmul(l0_b, w1);  ->         b
//!   let l1_b = layer_norm(l1_a,          }
//!                 key = "l.1.ln");       #[key = ""] let l0_b = layers(input, w0, "l.0.ln");
//!                                        #[key = ""] let l1_b = layers(l0_b, w1, "l.1.ln");
//! ```
//!
//! Values from before a repetition become block arguments; `param(...)` statements stay
//! in the model and are passed in; strings that differ between repetitions (the file's
//! parameter keys) are passed as strings, and `#[key = ""]` keeps the block call from
//! prefixing them. A repetition qualifies only when exactly one of its values is used
//! after it. The result is checked: [`with_blocks`] lowers both texts and keeps the
//! blocks only when they give the same ops, shapes and parameters.

use std::collections::{HashMap, HashSet};

/// Fewest statements a repetition must hold to become a block.
const MIN_STATEMENTS: usize = 3;
/// Most blocks one model gets.
const MAX_BLOCKS: usize = 8;
/// Longest body searched (the search is quadratic in it).
const MAX_BODY: usize = 4000;

/// One token of a statement's right-hand side.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Ident(String),
    Str(String),
    Other(char),
    Number(String),
}

/// One `let name = expr;` of the model body.
#[derive(Clone, Debug)]
struct Stmt {
    name: String,
    expr: Vec<Token>,
    /// A `param(...)` declaration (stays in the model, passed to a block).
    param: bool,
    /// Leading attributes (`#[key = ""]` of a block call).
    attrs: String,
    /// The line as imported, for a statement left as it was.
    original: Option<String>,
}

/// The imported model text with its repeated layers as blocks, or the text unchanged
/// when nothing repeats (or the rewrite would not give the same model).
pub fn with_blocks(dsl: &str) -> String {
    let Some(rewritten) = rewrite(dsl) else {
        return dsl.to_string();
    };
    if same_model(dsl, &rewritten) {
        rewritten
    } else {
        dsl.to_string()
    }
}

/// True when both texts lower to the same ops with the same shapes, in order, and the
/// same parameters (key and shape).
fn same_model(a: &str, b: &str) -> bool {
    let summary = |text: &str| {
        let models = dnnfusion_compiler::lower_str(text).ok()?;
        let [model] = models.as_slice() else {
            return None;
        };
        let graph = &model.graph;
        let nodes: Vec<String> = graph
            .nodes
            .iter()
            .map(|n| {
                let shape = graph.values.get(n.output).map(|v| v.shape.clone());
                format!("{:?} {:?}", n.op, shape)
            })
            .collect();
        let mut params: Vec<(String, Vec<usize>)> = graph
            .params
            .iter()
            .map(|p| (p.key.clone(), p.shape.clone()))
            .collect();
        params.sort();
        Some((nodes, params))
    };
    match (summary(a), summary(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// The text split into what comes before the body, the body's statements, the result
/// expression and what follows; `None` for a layout [`crate::import`] does not write.
fn rewrite(dsl: &str) -> Option<String> {
    let lines: Vec<&str> = dsl.lines().collect();
    let open = lines
        .iter()
        .position(|l| l.starts_with("model ") || l.starts_with("pub model "))?;
    let close = lines.iter().rposition(|l| *l == "}")?;
    let inner = lines.get(open + 1..close)?;
    let (result, stmt_lines) = inner.split_last()?;
    let mut body = Vec::with_capacity(stmt_lines.len());
    for line in stmt_lines {
        body.push(parse_stmt(line.trim())?);
    }
    if body.len() > MAX_BODY {
        return None;
    }
    let result = tokenize(result.trim())?;
    let inputs = input_names(lines.get(open)?)?;
    let mut blocks = Vec::new();
    let mut taken: HashSet<String> = HashSet::new();
    while blocks.len() < MAX_BLOCKS {
        let Some(found) = best_repeat(&body, &result, &inputs) else {
            break;
        };
        let name = block_name(&body, &found, &mut taken);
        let (block, new_body) = factor(&body, &result, &inputs, &found, &name)?;
        blocks.push(block);
        body = new_body;
    }
    if blocks.is_empty() {
        return None;
    }
    let mut out = String::new();
    for line in lines.get(..open)? {
        if !line.starts_with("///") {
            out.push_str(line);
            out.push('\n');
        }
    }
    for block in &blocks {
        out.push_str(block);
    }
    for line in lines.get(..open)? {
        if line.starts_with("///") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str(lines.get(open)?);
    out.push('\n');
    for stmt in &body {
        match &stmt.original {
            Some(line) => out.push_str(&format!("    {line}\n")),
            None => out.push_str(&format!(
                "    {}let {} = {};\n",
                stmt.attrs,
                stmt.name,
                render(&stmt.expr)
            )),
        }
    }
    out.push_str(&format!("    {}\n", inner.last()?.trim()));
    for line in lines.get(close..)? {
        out.push_str(line);
        out.push('\n');
    }
    Some(out)
}

/// The input names of the `model Name(a: [..], b: i64[..]) -> ...` line.
fn input_names(header: &str) -> Option<Vec<String>> {
    let start = header.find('(')?;
    let end = header.find(") ->")?;
    let mut names = Vec::new();
    let mut depth = 0i32;
    let mut current = String::new();
    for c in header.get(start + 1..end)?.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                names.push(current.split(':').next()?.trim().to_string());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        names.push(current.split(':').next()?.trim().to_string());
    }
    Some(names)
}

fn parse_stmt(line: &str) -> Option<Stmt> {
    let rest = line.strip_prefix("let ")?.strip_suffix(';')?;
    let (name, expr) = rest.split_once(" = ")?;
    let expr = tokenize(expr)?;
    let param = matches!(expr.first(), Some(Token::Ident(f)) if f == "param");
    Some(Stmt {
        name: name.trim().to_string(),
        expr,
        param,
        attrs: String::new(),
        original: Some(line.to_string()),
    })
}

fn tokenize(text: &str) -> Option<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c.is_ascii_alphabetic() || c == '_' {
            let mut s = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    s.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            tokens.push(Token::Ident(s));
        } else if c.is_ascii_digit() {
            let mut s = String::new();
            while let Some(&c) = chars.peek() {
                let exponent_sign = (c == '-' || c == '+') && s.ends_with(['e', 'E']);
                if c.is_ascii_alphanumeric() || c == '.' || exponent_sign {
                    s.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            tokens.push(Token::Number(s));
        } else if c == '"' {
            chars.next();
            let mut s = String::new();
            loop {
                let c = chars.next()?;
                match c {
                    '"' => break,
                    '\\' => {
                        s.push(c);
                        s.push(chars.next()?);
                    }
                    c => s.push(c),
                }
            }
            tokens.push(Token::Str(s));
        } else {
            tokens.push(Token::Other(c));
            chars.next();
        }
    }
    Some(tokens)
}

fn render(tokens: &[Token]) -> String {
    let mut out = String::new();
    let mut previous: Option<&Token> = None;
    let mut unary = false;
    for token in tokens {
        let text = match token {
            Token::Ident(s) | Token::Number(s) => s.clone(),
            Token::Str(s) => format!("\"{s}\""),
            Token::Other(c) => c.to_string(),
        };
        let space = match (previous, token) {
            (None, _) => false,
            (_, Token::Other(')' | ']' | ',' | ';')) => false,
            (Some(Token::Other('(' | '[')), _) => false,
            (Some(Token::Ident(_)), Token::Other('(')) => false,
            _ => !unary,
        };
        if space {
            out.push(' ');
        }
        out.push_str(&text);
        // a minus after an operator, a bracket, a comma or at the start is unary
        unary =
            matches!(token, Token::Other('-')) && matches!(previous, None | Some(Token::Other(_)));
        previous = Some(token);
    }
    out
}

/// Positions of the tokens of `expr` that name a value: identifiers bound before, not
/// followed by `=` (a keyword argument) or `(` (a call).
fn references(expr: &[Token], bound: &HashMap<&str, usize>) -> Vec<(usize, String)> {
    let mut refs = Vec::new();
    for (i, token) in expr.iter().enumerate() {
        let Token::Ident(name) = token else { continue };
        let next = expr.get(i + 1);
        let keyword = matches!(next, Some(Token::Other('=')))
            && !matches!(expr.get(i + 2), Some(Token::Other('=')));
        let call = matches!(next, Some(Token::Other('(')));
        if !keyword && !call && bound.contains_key(name.as_str()) {
            refs.push((i, name.clone()));
        }
    }
    refs
}

/// A run of `count` repetitions of `len` statements from `start`.
#[derive(Clone, Copy, Debug)]
struct Repeat {
    start: usize,
    len: usize,
    count: usize,
}

/// What one repetition looks like with its own names taken out, and what was taken.
#[derive(Debug, PartialEq, Eq)]
struct Shape {
    /// Per statement: param or not, and the tokens with references and strings replaced.
    template: Vec<(bool, Vec<Token>)>,
    /// Values from before the repetition, in order of first use.
    inputs: Vec<String>,
    /// Strings, in order.
    strings: Vec<String>,
    /// The one statement (offset) whose value is used after the repetition.
    output: usize,
}

/// The shape of `body[start..start + len]`; `None` unless exactly one compute value is
/// used after it.
fn shape_of(
    body: &[Stmt],
    result: &[Token],
    bound_at: &HashMap<&str, usize>,
    start: usize,
    len: usize,
) -> Option<Shape> {
    let segment = body.get(start..start + len)?;
    let mut template = Vec::with_capacity(len);
    let mut inputs: Vec<String> = Vec::new();
    let mut strings = Vec::new();
    for stmt in segment {
        let mut tokens = stmt.expr.clone();
        if stmt.param {
            // the key is the parameter's own; the block sees only the tensor
            tokens.retain(|t| !matches!(t, Token::Str(_)));
        } else {
            for (i, name) in references(&stmt.expr, bound_at) {
                let defined = *bound_at.get(name.as_str())?;
                let replacement = if (start..start + len).contains(&defined) {
                    format!("@{}", defined - start)
                } else {
                    let k = match inputs.iter().position(|n| *n == name) {
                        Some(k) => k,
                        None => {
                            inputs.push(name.clone());
                            inputs.len() - 1
                        }
                    };
                    format!("#{k}")
                };
                *tokens.get_mut(i)? = Token::Ident(replacement);
            }
            for token in tokens.iter_mut() {
                if let Token::Str(s) = token {
                    strings.push(s.clone());
                    *token = Token::Str(String::new());
                }
            }
        }
        template.push((stmt.param, tokens));
    }
    // values used after the repetition (params stay bound in the model)
    let mut used_after: HashSet<usize> = HashSet::new();
    let later = body.get(start + len..)?.iter().map(|s| s.expr.as_slice());
    for expr in later.chain(std::iter::once(result)) {
        for (_, name) in references(expr, bound_at) {
            let defined = *bound_at.get(name.as_str())?;
            if (start..start + len).contains(&defined) {
                used_after.insert(defined - start);
            }
        }
    }
    let mut outputs = used_after
        .into_iter()
        .filter(|&o| segment.get(o).is_some_and(|s| !s.param));
    let output = outputs.next()?;
    if outputs.next().is_some() {
        return None;
    }
    Some(Shape {
        template,
        inputs,
        strings,
        output,
    })
}

/// Where each binding is defined (the model's inputs at `usize::MAX`: outside every
/// repetition).
fn bindings<'a>(body: &'a [Stmt], inputs: &'a [String]) -> HashMap<&'a str, usize> {
    let mut at: HashMap<&str, usize> = inputs.iter().map(|n| (n.as_str(), usize::MAX)).collect();
    for (i, stmt) in body.iter().enumerate() {
        at.insert(stmt.name.as_str(), i);
    }
    at
}

/// The repeat that saves the most statements.
fn best_repeat(body: &[Stmt], result: &[Token], inputs: &[String]) -> Option<Repeat> {
    let bound_at = bindings(body, inputs);
    let computes = |start: usize, len: usize| {
        body.get(start..start + len).map_or(0, |s| {
            s.iter().filter(|s| !s.param && s.attrs.is_empty()).count()
        })
    };
    let mut best: Option<(usize, Repeat)> = None;
    let n = body.len();
    for len in (MIN_STATEMENTS..=n / 2).rev() {
        // no repeat of this length can beat the best found
        if let Some((saved, _)) = best {
            if len * (n / len - 1) <= saved {
                continue;
            }
        }
        let mut start = 0;
        while start + 2 * len <= n {
            let Some(first) = shape_of(body, result, &bound_at, start, len) else {
                start += 1;
                continue;
            };
            let mut count = 1;
            while let Some(next) = shape_of(body, result, &bound_at, start + count * len, len) {
                if next.template != first.template
                    || next.output != first.output
                    || next.inputs.len() != first.inputs.len()
                    || next.strings.len() != first.strings.len()
                {
                    break;
                }
                count += 1;
            }
            let compute = computes(start, len);
            if count >= 2 && compute >= MIN_STATEMENTS {
                let saved = compute * (count - 1);
                if best.is_none_or(|(s, _)| saved > s) {
                    best = Some((saved, Repeat { start, len, count }));
                }
                start += count * len;
            } else {
                start += 1;
            }
        }
    }
    best.map(|(_, r)| r)
}

/// A block name from the first repetition's bindings: their common start without the
/// layer index (`layers_0_query` -> `layers`, `layer1_0_conv` -> `layer`), else
/// `repeated`; numbered when taken.
fn block_name(body: &[Stmt], repeat: &Repeat, taken: &mut HashSet<String>) -> String {
    let names: Vec<&str> = body
        .get(repeat.start..repeat.start + repeat.len)
        .unwrap_or(&[])
        .iter()
        .filter(|s| !s.param)
        .map(|s| s.name.as_str())
        .collect();
    let prefix = common_prefix(&names);
    let stem: String = prefix
        .trim_end_matches(|c: char| c.is_ascii_digit() || c == '_')
        .to_string();
    let base = if stem.is_empty() || !stem.starts_with(|c: char| c.is_ascii_alphabetic()) {
        "repeated".to_string()
    } else if crate::import::reserved(&stem) {
        format!("{stem}_block")
    } else {
        stem
    };
    let mut name = base.clone();
    let mut k = 2;
    while taken.contains(&name) {
        name = format!("{base}_{k}");
        k += 1;
    }
    taken.insert(name.clone());
    name
}

fn common_prefix(names: &[&str]) -> String {
    let Some(first) = names.first() else {
        return String::new();
    };
    let mut len = first.len();
    for name in names {
        len = len.min(
            first
                .bytes()
                .zip(name.bytes())
                .take_while(|(a, b)| a == b)
                .count(),
        );
    }
    // cut after the last `_` so a name is never split inside a word
    let head = first.get(..len).unwrap_or("");
    match head.rfind('_') {
        Some(i) => head.get(..=i).unwrap_or("").to_string(),
        None => String::new(),
    }
}

/// The block text and the body with each repetition replaced by its params and a call.
fn factor(
    body: &[Stmt],
    result: &[Token],
    inputs: &[String],
    repeat: &Repeat,
    name: &str,
) -> Option<(String, Vec<Stmt>)> {
    let bound_at = bindings(body, inputs);
    let shapes: Vec<Shape> = (0..repeat.count)
        .map(|i| {
            shape_of(
                body,
                result,
                &bound_at,
                repeat.start + i * repeat.len,
                repeat.len,
            )
        })
        .collect::<Option<_>>()?;
    let first = shapes.first()?;
    let segment = body.get(repeat.start..repeat.start + repeat.len)?;
    // strings that differ between repetitions become arguments
    let varying: Vec<bool> = (0..first.strings.len())
        .map(|k| {
            shapes
                .iter()
                .any(|s| s.strings.get(k) != first.strings.get(k))
        })
        .collect();
    // parameters the block reads, in order of first use (offsets of param statements)
    let mut params_used: Vec<usize> = Vec::new();
    for (_, tokens) in first.template.iter().filter(|(param, _)| !param) {
        for token in tokens {
            if let Token::Ident(t) = token {
                if let Some(offset) = t.strip_prefix('@').and_then(|o| o.parse::<usize>().ok()) {
                    if segment.get(offset).is_some_and(|s| s.param)
                        && !params_used.contains(&offset)
                    {
                        params_used.push(offset);
                    }
                }
            }
        }
    }
    let computed: Vec<&str> = segment
        .iter()
        .filter(|s| !s.param)
        .map(|s| s.name.as_str())
        .collect();
    let prefix = common_prefix(&computed);
    let local = |offset: usize| -> String {
        let full = segment.get(offset).map_or("", |s| s.name.as_str());
        let short = full.strip_prefix(prefix.as_str()).unwrap_or(full);
        if short.starts_with(|c: char| c.is_ascii_alphabetic()) && !crate::import::reserved(short) {
            short.to_string()
        } else {
            full.to_string()
        }
    };
    let input_names: Vec<String> = (0..first.inputs.len()).map(|k| format!("x{k}")).collect();
    let param_names: Vec<String> = params_used
        .iter()
        .map(|&o| format!("w_{}", local(o)))
        .collect();
    let key_names: Vec<String> = (0..varying.iter().filter(|v| **v).count())
        .map(|k| format!("key{k}"))
        .collect();
    // the block
    let mut text = format!(
        "/// Repeated {} times in the imported graph.\nblock {name}({}) {{\n",
        repeat.count,
        input_names
            .iter()
            .chain(&param_names)
            .chain(&key_names)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut string_index = 0;
    for (offset, (param, tokens)) in first.template.iter().enumerate() {
        if *param {
            continue;
        }
        let mut out = Vec::with_capacity(tokens.len());
        for token in tokens {
            out.push(match token {
                Token::Ident(t) if t.starts_with('@') => {
                    let o: usize = t.get(1..)?.parse().ok()?;
                    match params_used.iter().position(|&p| p == o) {
                        Some(k) => Token::Ident(param_names.get(k)?.clone()),
                        None => Token::Ident(local(o)),
                    }
                }
                Token::Ident(t) if t.starts_with('#') => {
                    let k: usize = t.get(1..)?.parse().ok()?;
                    Token::Ident(input_names.get(k)?.clone())
                }
                Token::Str(_) => {
                    let k = string_index;
                    string_index += 1;
                    if *varying.get(k)? {
                        let arg = varying.get(..k)?.iter().filter(|v| **v).count();
                        Token::Ident(key_names.get(arg)?.clone())
                    } else {
                        Token::Str(first.strings.get(k)?.clone())
                    }
                }
                other => other.clone(),
            });
        }
        text.push_str(&format!("    let {} = {};\n", local(offset), render(&out)));
    }
    text.push_str(&format!("    {}\n}}\n\n", local(first.output)));
    // the body
    let mut new_body: Vec<Stmt> = body.get(..repeat.start)?.to_vec();
    for (i, shape) in shapes.iter().enumerate() {
        let seg_start = repeat.start + i * repeat.len;
        let seg = body.get(seg_start..seg_start + repeat.len)?;
        new_body.extend(seg.iter().filter(|s| s.param).cloned());
        let mut args: Vec<Token> = Vec::new();
        let push_arg = |t: Token, args: &mut Vec<Token>| {
            if !args.is_empty() {
                args.push(Token::Other(','));
            }
            args.push(t);
        };
        for input in &shape.inputs {
            push_arg(Token::Ident(input.clone()), &mut args);
        }
        for &o in &params_used {
            push_arg(Token::Ident(seg.get(o)?.name.clone()), &mut args);
        }
        for (k, s) in shape.strings.iter().enumerate() {
            if *varying.get(k)? {
                push_arg(Token::Str(s.clone()), &mut args);
            }
        }
        let mut expr = vec![Token::Ident(name.to_string()), Token::Other('(')];
        expr.extend(args);
        expr.push(Token::Other(')'));
        new_body.push(Stmt {
            name: seg.get(shape.output)?.name.clone(),
            expr,
            param: false,
            attrs: "#[key = \"\"] ".to_string(),
            original: None,
        });
    }
    new_body.extend(
        body.get(repeat.start + repeat.count * repeat.len..)?
            .iter()
            .cloned(),
    );
    Some((text, new_body))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_LAYERS: &str = "/// Two layers.
model M(x: [1, 8]) -> [1, 8] {
    let w0 = param([8, 8], key = \"a.0.w\");
    let l0_m = matmul(x, w0);
    let l0_n = layer_norm(l0_m, key = \"a.0.ln\");
    let l0_r = relu(l0_n);
    let w1 = param([8, 8], key = \"a.1.w\");
    let l1_m = matmul(l0_r, w1);
    let l1_n = layer_norm(l1_m, key = \"a.1.ln\");
    let l1_r = relu(l1_n);
    l1_r
}
";

    #[test]
    fn two_identical_layers_become_one_block_with_the_same_model() {
        let text = with_blocks(TWO_LAYERS);
        assert!(text.contains("block l(x0, w_w0, key0) {"), "{text}");
        assert!(text.contains("layer_norm(m, key = key0)"), "{text}");
        assert!(
            text.contains("#[key = \"\"] let l1_r = l(l0_r, w1, \"a.1.ln\");"),
            "{text}"
        );
        assert!(same_model(TWO_LAYERS, &text));
    }

    #[test]
    fn a_layer_whose_inner_value_is_used_later_stays_flat() {
        let text = TWO_LAYERS.replace("    l1_r\n", "    l1_r + l0_n\n");
        assert_eq!(with_blocks(&text), text);
    }
}
