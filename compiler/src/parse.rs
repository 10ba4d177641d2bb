//! Stage 1, `parse`: tokens -> [`Ast`], with a span on every node.
//!
//! Syntax only: names are not resolved and shapes are not checked here (`lower` and
//! `check` do that). The grammar, informally:
//!
//! ```text
//! input   := item*
//! item    := attr* vis? "model" IDENT "(" tensor,* ")" "->" outputs body
//!          | attr* "block" IDENT "(" block_param,* ")" body
//! tensor  := IDENT ":" "[" expr,* "]"
//! outputs := "[" expr,* "]" | "(" (IDENT ":")? "[" expr,* "]" ,* ")"
//! block_param := IDENT (":" "[" expr,* "]")? ("=" expr)?
//! body    := "{" stmt* expr? "}"
//! stmt    := attr* "let" "mut"? (IDENT | "(" IDENT,* ")") "=" expr ";"
//!          | attr* IDENT "=" expr ";"
//!          | "for" IDENT "in" expr ".." expr "{" stmt* "}"
//!          | "fuse" "{" stmt* "}"
//! expr    := the usual + - * / % with unary -, calls f(a, key = b), [lists], literals
//! ```

use proc_macro2::{Delimiter, Span};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{
    braced, bracketed, parenthesized, token, Attribute, Ident, LitFloat, LitInt, LitStr, Token,
    Visibility,
};

/// Everything inside one `dnn! { ... }`.
#[derive(Debug)]
pub struct Ast {
    /// `#![...]` options for every model of the invocation (`#![fusion(off)]`).
    pub inner_attrs: Vec<Attribute>,
    /// Models and blocks, in source order.
    pub items: Vec<Item>,
}

/// A top-level declaration.
#[derive(Debug)]
pub enum Item {
    /// `model Name(...) -> ... { ... }`
    Model(ModelDecl),
    /// `block name(...) { ... }`
    Block(BlockDecl),
    /// `model Name = onnx("file.onnx", batch = 1);`, replaced by the imported model
    /// before lowering (see [`crate::expand_with`]).
    Onnx(OnnxDecl),
}

/// `pub model ResNet18 = onnx("resnet18.onnx", batch = 1);`
#[derive(Debug)]
pub struct OnnxDecl {
    /// Outer attributes, carried over to the imported model.
    pub attrs: Vec<Attribute>,
    /// Visibility of the generated type.
    pub vis: Visibility,
    /// Name of the generated type.
    pub name: Ident,
    /// The file, relative to the declaring crate's `CARGO_MANIFEST_DIR`.
    pub path: LitStr,
    /// Sizes of the graph's dynamic dimensions, by name.
    pub pins: Vec<(Ident, usize)>,
    /// The `onnx` token: the span the imported model's tokens get.
    pub span: Span,
    /// `onnx(...)`, for errors that underline the whole call.
    pub call: proc_macro2::TokenStream,
}

/// `pub model Name(x: [1, 3]) -> [1, 2] { ... }`
#[derive(Debug)]
pub struct ModelDecl {
    /// Outer attributes: `///` docs and options such as `#[fusion(off)]`.
    pub attrs: Vec<Attribute>,
    /// Visibility of the generated type.
    pub vis: Visibility,
    /// Name of the generated type.
    pub name: Ident,
    /// Inputs with their shapes.
    pub inputs: Vec<TensorDecl>,
    /// Outputs with their shapes.
    pub outputs: Vec<OutputDecl>,
    /// Statements and the result expression.
    pub body: Body,
}

/// `x: [1, 3, 224, 224]`, or `ids: i64[1, 128]` for integer indices.
#[derive(Debug)]
pub struct TensorDecl {
    /// The name.
    pub name: Ident,
    /// `i64` or `i32` before the shape: the caller passes integers (token ids for
    /// `embedding`/`gather`); absent for f32.
    pub dtype: Option<Ident>,
    /// The dimensions, as integer expressions.
    pub shape: Vec<Expr>,
    /// The bracket span, for shape errors.
    pub shape_span: Span,
}

/// One output: an optional name and a shape.
#[derive(Debug)]
pub struct OutputDecl {
    /// `logits` in `(logits: [1, 10])`.
    pub name: Option<Ident>,
    /// The dimensions.
    pub shape: Vec<Expr>,
    /// The bracket span.
    pub shape_span: Span,
}

/// `block name(x: [B, C, H, W], cout, stride = 1) { ... }`
#[derive(Debug)]
pub struct BlockDecl {
    /// `///` docs.
    pub attrs: Vec<Attribute>,
    /// The name calls use.
    pub name: Ident,
    /// Parameters: tensors (optionally with a shape pattern) and attributes.
    pub params: Vec<BlockParam>,
    /// Statements and the result expression.
    pub body: Body,
}

/// One block parameter.
#[derive(Debug)]
pub struct BlockParam {
    /// The name.
    pub name: Ident,
    /// A shape pattern (`[B, S, D]`): identifiers bind dims, numbers must match.
    pub shape: Option<Vec<Expr>>,
    /// Default value; a parameter with one may be given by keyword.
    pub default: Option<Expr>,
}

/// `{ stmt* expr? }`
#[derive(Debug)]
pub struct Body {
    /// Statements in order.
    pub stmts: Vec<Stmt>,
    /// The value of the body.
    pub result: Option<Expr>,
    /// The closing brace, for "missing result" errors.
    pub close_span: Span,
}

/// A statement.
#[derive(Debug)]
pub enum Stmt {
    /// `let x = e;` or `let (a, b) = e;`
    Let {
        /// `#[key = "..."]` renames the parameters of the op or block on the right.
        key: Option<LitStr>,
        /// Bound names (one, or several for a tuple pattern).
        names: Vec<Ident>,
        /// True when written `let (a, b)`.
        tuple: bool,
        /// The value.
        value: Expr,
    },
    /// `x = e;` rebinds an existing name (useful in loops).
    Assign {
        /// `#[key = "..."]`
        key: Option<LitStr>,
        /// The rebound name.
        name: Ident,
        /// The value.
        value: Expr,
    },
    /// `for i in a..b { ... }`, unrolled at compile time.
    For {
        /// Loop variable, an integer.
        var: Ident,
        /// Start (inclusive).
        start: Expr,
        /// End (exclusive).
        end: Expr,
        /// The loop body's statements.
        body: Vec<Stmt>,
        /// The `for` keyword.
        span: Span,
    },
    /// `if cond { ... } else if cond { ... } else { ... }`, decided at compile time: only
    /// the taken branch is lowered; its `let` bindings end with it (assign to a name bound
    /// before the `if` to pass a value out).
    If {
        /// Each condition with its statements, in order.
        branches: Vec<(Expr, Vec<Stmt>)>,
        /// The `else` statements.
        otherwise: Option<Vec<Stmt>>,
        /// The `if` keyword.
        span: Span,
    },
    /// `fuse { ... }`: the ops of these statements must run as one fused block.
    Fuse {
        /// The grouped statements (their bindings stay visible after the group).
        body: Vec<Stmt>,
        /// The `fuse` keyword.
        span: Span,
    },
}

/// Binary operators of the DSL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%` (integers only)
    Rem,
}

/// Comparison and logic operators of compile-time conditions (`stride != 1 || c != d`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CondOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `&&`
    And,
    /// `||`
    Or,
}

impl CondOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            CondOp::Eq => "==",
            CondOp::Ne => "!=",
            CondOp::Lt => "<",
            CondOp::Le => "<=",
            CondOp::Gt => ">",
            CondOp::Ge => ">=",
            CondOp::And => "&&",
            CondOp::Or => "||",
        }
    }
}

/// An expression.
#[derive(Debug)]
pub enum Expr {
    /// A name: tensor, integer, loop variable or dimension.
    Name(Ident),
    /// `3`
    Int(LitInt),
    /// `0.5`, `1e-5`
    Float(LitFloat),
    /// `"same"`
    Str(LitStr),
    /// `true` / `false`
    Bool(bool, Span),
    /// `[a, b, c]`
    List(Vec<Expr>, Span),
    /// `f(a, b, key = c)`
    Call {
        /// The op or block name.
        func: Ident,
        /// Arguments in order.
        args: Vec<Arg>,
        /// The parentheses.
        paren_span: Span,
    },
    /// `a + b` etc.
    Binary {
        /// The operator.
        op: BinOp,
        /// The operator token's span.
        op_span: Span,
        /// Left operand.
        lhs: Box<Expr>,
        /// Right operand.
        rhs: Box<Expr>,
    },
    /// `-a`
    Neg(Box<Expr>, Span),
    /// `a == b`, `a && b` etc.: compile-time conditions, giving a boolean.
    Cond {
        /// The operator.
        op: CondOp,
        /// The operator token's span.
        op_span: Span,
        /// Left operand.
        lhs: Box<Expr>,
        /// Right operand.
        rhs: Box<Expr>,
    },
    /// `!a` on a boolean.
    Not(Box<Expr>, Span),
    /// `(a, b)`: several tensors, as the result of a body.
    Tuple(Vec<Expr>, Span),
}

impl Expr {
    /// A span covering the expression, for errors.
    pub fn span(&self) -> Span {
        match self {
            Expr::Name(i) => i.span(),
            Expr::Int(l) => l.span(),
            Expr::Float(l) => l.span(),
            Expr::Str(l) => l.span(),
            Expr::Bool(_, s)
            | Expr::List(_, s)
            | Expr::Neg(_, s)
            | Expr::Not(_, s)
            | Expr::Tuple(_, s) => *s,
            Expr::Call {
                func, paren_span, ..
            } => func.span().join(*paren_span).unwrap_or(func.span()),
            Expr::Binary { lhs, rhs, .. } | Expr::Cond { lhs, rhs, .. } => {
                lhs.span().join(rhs.span()).unwrap_or(lhs.span())
            }
        }
    }
}

/// A call argument: positional or `name = value`.
#[derive(Debug)]
pub struct Arg {
    /// The keyword, when given.
    pub name: Option<Ident>,
    /// The value.
    pub value: Expr,
}

/// Parses the tokens of a `dnn!` invocation.
pub fn parse(tokens: proc_macro2::TokenStream) -> syn::Result<Ast> {
    syn::parse2(tokens)
}

impl Parse for Ast {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let inner_attrs = input.call(Attribute::parse_inner)?;
        let mut items = Vec::new();
        while !input.is_empty() {
            items.push(input.parse()?);
        }
        Ok(Ast { inner_attrs, items })
    }
}

/// The part after `model Name =`: `onnx("file.onnx", name = size, ...);`
fn parse_onnx(
    input: ParseStream,
    attrs: Vec<Attribute>,
    vis: Visibility,
    name: Ident,
) -> syn::Result<OnnxDecl> {
    let func: Ident = input.parse()?;
    if func != "onnx" {
        return Err(syn::Error::new(
            func.span(),
            "expected `onnx(\"file.onnx\")` after `=`: a model is declared with a body, or imported from an ONNX file",
        ));
    }
    let group: proc_macro2::Group = input.parse()?;
    if group.delimiter() != proc_macro2::Delimiter::Parenthesis {
        return Err(syn::Error::new(group.span(), "expected `(` after `onnx`"));
    }
    let (path, pins) = syn::parse::Parser::parse2(parse_onnx_args, group.stream())?;
    input
        .parse::<Token![;]>()
        .map_err(|e| syn::Error::new(e.span(), "expected `;` after `onnx(...)`"))?;
    let span = func.span();
    let call = quote::quote!(#func #group);
    Ok(OnnxDecl {
        attrs,
        vis,
        name,
        path,
        pins,
        span,
        call,
    })
}

/// `"file.onnx", name = size, ...`
fn parse_onnx_args(content: ParseStream) -> syn::Result<(LitStr, Vec<(Ident, usize)>)> {
    let path: LitStr = content.parse().map_err(|e| {
        syn::Error::new(
            e.span(),
            "expected the file as a string literal: `onnx(\"model.onnx\")`",
        )
    })?;
    let mut pins: Vec<(Ident, usize)> = Vec::new();
    while !content.is_empty() {
        content.parse::<Token![,]>()?;
        if content.is_empty() {
            break;
        }
        let dim: Ident = content.call(Ident::parse_any)?;
        content.parse::<Token![=]>().map_err(|e| {
            syn::Error::new(
                e.span(),
                format!(
                    "expected `= size` after `{dim}`: dynamic dimensions are pinned as `{dim} = 1`"
                ),
            )
        })?;
        let size: LitInt = content.parse()?;
        let value: usize = size.base10_parse()?;
        if value == 0 {
            return Err(syn::Error::new(
                size.span(),
                format!("`{dim}` must be at least 1"),
            ));
        }
        if pins.iter().any(|(p, _)| *p == dim) {
            return Err(syn::Error::new(
                dim.span(),
                format!("`{dim}` is pinned twice"),
            ));
        }
        pins.push((dim, value));
    }
    Ok((path, pins))
}

impl Parse for Item {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        let keyword: Ident = input.call(Ident::parse_any).map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected `model` or `block` (a dnn! input holds model and block declarations)",
            )
        })?;
        match keyword.to_string().as_str() {
            "model" => {
                let name: Ident = input.parse()?;
                if input.peek(Token![=]) {
                    input.parse::<Token![=]>()?;
                    return parse_onnx(input, attrs, vis, name).map(Item::Onnx);
                }
                let content;
                parenthesized!(content in input);
                let mut inputs = Vec::new();
                while !content.is_empty() {
                    let name: Ident = content.parse()?;
                    content.parse::<Token![:]>().map_err(|e| {
                        syn::Error::new(e.span(), format!("expected `:` and a shape after input `{name}`, as in `{name}: [1, 3, 32, 32]`"))
                    })?;
                    let dtype = if content.peek(Ident) {
                        Some(content.parse::<Ident>()?)
                    } else {
                        None
                    };
                    let (shape, shape_span) = parse_shape(&content)?;
                    inputs.push(TensorDecl {
                        name,
                        dtype,
                        shape,
                        shape_span,
                    });
                    if content.is_empty() {
                        break;
                    }
                    content.parse::<Token![,]>()?;
                }
                input.parse::<Token![->]>().map_err(|e| {
                    syn::Error::new(
                        e.span(),
                        "expected `->` and the output shape, as in `-> [1, 10]`",
                    )
                })?;
                let outputs = parse_outputs(input)?;
                let body = input.parse()?;
                Ok(Item::Model(ModelDecl {
                    attrs,
                    vis,
                    name,
                    inputs,
                    outputs,
                    body,
                }))
            }
            "block" => {
                if !matches!(vis, Visibility::Inherited) {
                    return Err(syn::Error::new(
                        vis.span(),
                        "a block is not a type: remove the visibility",
                    ));
                }
                let name: Ident = input.parse()?;
                let content;
                parenthesized!(content in input);
                let mut params = Vec::new();
                while !content.is_empty() {
                    let name: Ident = content.parse()?;
                    let shape = if content.peek(Token![:]) {
                        content.parse::<Token![:]>()?;
                        Some(parse_shape(&content)?.0)
                    } else {
                        None
                    };
                    let default = if content.peek(Token![=]) {
                        content.parse::<Token![=]>()?;
                        Some(content.parse()?)
                    } else {
                        None
                    };
                    params.push(BlockParam {
                        name,
                        shape,
                        default,
                    });
                    if content.is_empty() {
                        break;
                    }
                    content.parse::<Token![,]>()?;
                }
                let body = input.parse()?;
                Ok(Item::Block(BlockDecl {
                    attrs,
                    name,
                    params,
                    body,
                }))
            }
            other => Err(syn::Error::new(
                keyword.span(),
                format!("expected `model` or `block`, found `{other}`"),
            )),
        }
    }
}

fn parse_shape(input: ParseStream) -> syn::Result<(Vec<Expr>, Span)> {
    if !input.peek(token::Bracket) {
        return Err(input.error("expected a shape in brackets, as in `[1, 3, 32, 32]`"));
    }
    let content;
    let bracket = bracketed!(content in input);
    let dims = content.parse_terminated(Expr::parse, Token![,])?;
    Ok((dims.into_iter().collect(), bracket.span.join()))
}

fn parse_outputs(input: ParseStream) -> syn::Result<Vec<OutputDecl>> {
    if input.peek(token::Paren) {
        let content;
        parenthesized!(content in input);
        let mut outputs = Vec::new();
        while !content.is_empty() {
            let name = if content.peek(Ident) && content.peek2(Token![:]) {
                let name: Ident = content.parse()?;
                content.parse::<Token![:]>()?;
                Some(name)
            } else {
                None
            };
            let (shape, shape_span) = parse_shape(&content)?;
            outputs.push(OutputDecl {
                name,
                shape,
                shape_span,
            });
            if content.is_empty() {
                break;
            }
            content.parse::<Token![,]>()?;
        }
        if outputs.is_empty() {
            return Err(input.error("a model needs at least one output"));
        }
        Ok(outputs)
    } else {
        let (shape, shape_span) = parse_shape(input)?;
        Ok(vec![OutputDecl {
            name: None,
            shape,
            shape_span,
        }])
    }
}

impl Parse for Body {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let content;
        let brace = braced!(content in input);
        let (stmts, result) = parse_stmts(&content, true)?;
        Ok(Body {
            stmts,
            result,
            close_span: brace.span.close(),
        })
    }
}

fn parse_key_attr(input: ParseStream) -> syn::Result<Option<LitStr>> {
    let attrs = input.call(Attribute::parse_outer)?;
    let mut key = None;
    for attr in attrs {
        if attr.path().is_ident("key") {
            let value = match &attr.meta {
                syn::Meta::NameValue(nv) => match &nv.value {
                    syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(s),
                        ..
                    }) => s.clone(),
                    other => {
                        return Err(syn::Error::new(
                            other.span(),
                            "expected a string: `#[key = \"features.0\"]`",
                        ))
                    }
                },
                other => return Err(syn::Error::new(other.span(), "expected `#[key = \"...\"]`")),
            };
            if key.is_some() {
                return Err(syn::Error::new(attr.span(), "duplicate `#[key]` attribute"));
            }
            key = Some(value);
        } else {
            return Err(syn::Error::new(
                attr.path().span(),
                "unknown statement attribute; the only one is `#[key = \"prefix\"]`, which names the parameters of the op or block on the right",
            ));
        }
    }
    Ok(key)
}

fn parse_stmts(input: ParseStream, allow_result: bool) -> syn::Result<(Vec<Stmt>, Option<Expr>)> {
    let mut stmts = Vec::new();
    while !input.is_empty() {
        if input.peek(Token![if]) {
            stmts.push(parse_if(input)?);
            continue;
        }
        if input.peek(Token![for]) {
            let for_token: Token![for] = input.parse()?;
            let var: Ident = input.parse()?;
            input.parse::<Token![in]>()?;
            let start = parse_binary(input, 0)?;
            input
                .parse::<Token![..]>()
                .map_err(|e| syn::Error::new(e.span(), "expected a range `start..end`"))?;
            let end = parse_binary(input, 0)?;
            let content;
            braced!(content in input);
            let (body, _) = parse_stmts(&content, false)?;
            stmts.push(Stmt::For {
                var,
                start,
                end,
                body,
                span: for_token.span,
            });
            continue;
        }
        if input.peek(Ident)
            && input.peek2(token::Brace)
            && input.fork().parse::<Ident>().is_ok_and(|i| i == "fuse")
        {
            let keyword: Ident = input.parse()?;
            let content;
            braced!(content in input);
            let (body, _) = parse_stmts(&content, false)?;
            stmts.push(Stmt::Fuse {
                body,
                span: keyword.span(),
            });
            continue;
        }
        let key = parse_key_attr(input)?;
        if input.peek(Token![let]) {
            input.parse::<Token![let]>()?;
            if input.peek(Token![mut]) {
                input.parse::<Token![mut]>()?;
            }
            let (names, tuple) = if input.peek(token::Paren) {
                let content;
                parenthesized!(content in input);
                let names = content.parse_terminated(Ident::parse, Token![,])?;
                (names.into_iter().collect(), true)
            } else {
                (vec![input.parse::<Ident>()?], false)
            };
            input.parse::<Token![=]>()?;
            let value = input.parse()?;
            input
                .parse::<Token![;]>()
                .map_err(|e| syn::Error::new(e.span(), "expected `;` after the `let` statement"))?;
            stmts.push(Stmt::Let {
                key,
                names,
                tuple,
                value,
            });
        } else if input.peek(Ident) && input.peek2(Token![=]) && !input.peek2(Token![==]) {
            let name: Ident = input.parse()?;
            input.parse::<Token![=]>()?;
            let value = input.parse()?;
            input.parse::<Token![;]>()?;
            stmts.push(Stmt::Assign { key, name, value });
        } else {
            if key.is_some() {
                return Err(input.error("`#[key]` belongs on a `let` or an assignment"));
            }
            let expr: Expr = input.parse()?;
            if input.is_empty() && allow_result {
                return Ok((stmts, Some(expr)));
            }
            if input.is_empty() {
                return Err(syn::Error::new(
                    expr.span(),
                    "a loop body has no value: bind this with `let` or assign it to a name",
                ));
            }
            if input.peek(Token![;]) {
                return Err(syn::Error::new(
                    expr.span(),
                    "this expression's value is unused: bind it with `let name = ...;`, or make it the last expression of the body (no `;` after it)",
                ));
            }
            return Err(input.error("expected `;`: only the last expression of a body is its value, and other expressions must be bound with `let`"));
        }
    }
    Ok((stmts, None))
}

/// `if cond { ... } (else if cond { ... })* (else { ... })?`
fn parse_if(input: ParseStream) -> syn::Result<Stmt> {
    let if_token: Token![if] = input.parse()?;
    let mut branches = Vec::new();
    let mut otherwise = None;
    loop {
        let cond = parse_binary(input, 0)?;
        let content;
        braced!(content in input);
        let (body, _) = parse_stmts(&content, false)?;
        branches.push((cond, body));
        if !input.peek(Token![else]) {
            break;
        }
        input.parse::<Token![else]>()?;
        if input.peek(Token![if]) {
            input.parse::<Token![if]>()?;
            continue;
        }
        let content;
        braced!(content in input);
        let (body, _) = parse_stmts(&content, false)?;
        otherwise = Some(body);
        break;
    }
    Ok(Stmt::If {
        branches,
        otherwise,
        span: if_token.span,
    })
}

impl Parse for Expr {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        parse_binary(input, 0)
    }
}

/// An infix operator: arithmetic, or a comparison or logic operator of a condition.
enum Infix {
    Arith(BinOp),
    Cond(CondOp),
}

/// The next infix operator, its precedence and its width in punctuation tokens.
fn peek_infix(input: ParseStream) -> Option<(Infix, u8, usize)> {
    use Infix::{Arith, Cond};
    Some(if input.peek(Token![||]) {
        (Cond(CondOp::Or), 1, 2)
    } else if input.peek(Token![&&]) {
        (Cond(CondOp::And), 2, 2)
    } else if input.peek(Token![==]) {
        (Cond(CondOp::Eq), 3, 2)
    } else if input.peek(Token![!=]) {
        (Cond(CondOp::Ne), 3, 2)
    } else if input.peek(Token![<=]) {
        (Cond(CondOp::Le), 3, 2)
    } else if input.peek(Token![>=]) {
        (Cond(CondOp::Ge), 3, 2)
    } else if input.peek(Token![<]) && !input.peek(Token![<<]) {
        (Cond(CondOp::Lt), 3, 1)
    } else if input.peek(Token![>]) && !input.peek(Token![>>]) {
        (Cond(CondOp::Gt), 3, 1)
    } else if input.peek(Token![+]) && !input.peek(Token![+=]) {
        (Arith(BinOp::Add), 4, 1)
    } else if input.peek(Token![-]) && !input.peek(Token![->]) && !input.peek(Token![-=]) {
        (Arith(BinOp::Sub), 4, 1)
    } else if input.peek(Token![*]) && !input.peek(Token![*=]) {
        (Arith(BinOp::Mul), 5, 1)
    } else if input.peek(Token![/]) && !input.peek(Token![/=]) {
        (Arith(BinOp::Div), 5, 1)
    } else if input.peek(Token![%]) && !input.peek(Token![%=]) {
        (Arith(BinOp::Rem), 5, 1)
    } else {
        return None;
    })
}

/// Precedence climbing: `min` is the lowest precedence accepted at this level.
fn parse_binary(input: ParseStream, min: u8) -> syn::Result<Expr> {
    let mut lhs = parse_unary(input)?;
    while let Some((infix, prec, width)) = peek_infix(input) {
        if prec < min {
            break;
        }
        let op_span = input.span();
        for _ in 0..width {
            let _: proc_macro2::Punct = input.parse()?;
        }
        let rhs = parse_binary(input, prec + 1)?;
        let (lhs_box, rhs_box) = (Box::new(lhs), Box::new(rhs));
        lhs = match infix {
            Infix::Arith(op) => Expr::Binary {
                op,
                op_span,
                lhs: lhs_box,
                rhs: rhs_box,
            },
            Infix::Cond(op) => Expr::Cond {
                op,
                op_span,
                lhs: lhs_box,
                rhs: rhs_box,
            },
        };
    }
    Ok(lhs)
}

fn parse_unary(input: ParseStream) -> syn::Result<Expr> {
    if input.peek(Token![!]) && !input.peek(Token![!=]) {
        let bang: Token![!] = input.parse()?;
        let inner = parse_unary(input)?;
        return Ok(Expr::Not(Box::new(inner), bang.span));
    }
    if input.peek(Token![-]) {
        let minus: Token![-] = input.parse()?;
        let inner = parse_unary(input)?;
        return Ok(Expr::Neg(Box::new(inner), minus.span));
    }
    parse_atom(input)
}

fn parse_atom(input: ParseStream) -> syn::Result<Expr> {
    if input.peek(LitInt) {
        return Ok(Expr::Int(input.parse()?));
    }
    if input.peek(LitFloat) {
        return Ok(Expr::Float(input.parse()?));
    }
    if input.peek(LitStr) {
        return Ok(Expr::Str(input.parse()?));
    }
    if input.peek(syn::LitBool) {
        let b: syn::LitBool = input.parse()?;
        return Ok(Expr::Bool(b.value, b.span));
    }
    if input.peek(token::Paren) {
        let content;
        let paren = parenthesized!(content in input);
        let items = content.parse_terminated(Expr::parse, Token![,])?;
        if items.len() == 1 && !items.trailing_punct() {
            return items
                .into_iter()
                .next()
                .ok_or_else(|| content.error("expected an expression"));
        }
        return Ok(Expr::Tuple(items.into_iter().collect(), paren.span.join()));
    }
    if input.peek(token::Bracket) {
        let content;
        let bracket = bracketed!(content in input);
        let items = content.parse_terminated(Expr::parse, Token![,])?;
        return Ok(Expr::List(items.into_iter().collect(), bracket.span.join()));
    }
    if input.peek(Ident::peek_any) {
        let name = input.call(Ident::parse_any)?;
        if input.peek(token::Paren) {
            let content;
            let paren = parenthesized!(content in input);
            let mut args = Vec::new();
            while !content.is_empty() {
                let name = if content.peek(Ident)
                    && content.peek2(Token![=])
                    && !content.peek2(Token![==])
                {
                    let name: Ident = content.parse()?;
                    content.parse::<Token![=]>()?;
                    Some(name)
                } else {
                    None
                };
                let value: Expr = content.parse()?;
                args.push(Arg { name, value });
                if content.is_empty() {
                    break;
                }
                content.parse::<Token![,]>()?;
            }
            return Ok(Expr::Call {
                func: name,
                args,
                paren_span: paren.span.join(),
            });
        }
        return Ok(Expr::Name(name));
    }
    if let Some((group, _, _)) = input.cursor().group(Delimiter::Brace) {
        return Err(syn::Error::new(
            group.span(),
            "expected an expression; blocks `{ ... }` are not expressions in dnn!",
        ));
    }
    Err(input.error(
        "expected an expression: a name, a number, a call such as `relu(x)`, or a list `[1, 2]`",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn parses_a_model_with_blocks_and_loops() {
        let ast = parse(quote! {
            /// docs
            pub model M(x: [1, 4]) -> [1, 2] {
                let mut h = x;
                for i in 0..2 { #[key = "layers.{i}"] h = layer(h, n = 4); }
                linear(h, 2) * 2.0 - 1
            }
            block layer(h: [B, D], n = 3) { relu(linear(h, n + 1 - 1)) }
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ast.items.len(), 2);
        let Item::Model(m) = &ast.items[0] else {
            panic!("not a model")
        };
        assert_eq!(m.name.to_string(), "M");
        assert_eq!(m.body.stmts.len(), 2);
        assert!(m.body.result.is_some());
    }

    #[test]
    fn precedence_is_arithmetic() {
        let e: Expr = syn::parse2(quote!(1 + 2 * 3 - 4)).unwrap_or_else(|e| panic!("{e}"));
        // ((1 + (2 * 3)) - 4)
        let Expr::Binary {
            op: BinOp::Sub,
            lhs,
            ..
        } = e
        else {
            panic!("top is not sub")
        };
        let Expr::Binary {
            op: BinOp::Add,
            rhs,
            ..
        } = *lhs
        else {
            panic!("left is not add")
        };
        assert!(matches!(*rhs, Expr::Binary { op: BinOp::Mul, .. }));
    }

    #[test]
    fn rejects_unknown_items() {
        let err = parse(quote!(
            struct S;
        ))
        .err()
        .map(|e| e.to_string());
        assert!(err.is_some_and(|m| m.contains("expected `model` or `block`")));
    }
}
