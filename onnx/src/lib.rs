//! ONNX import for dnnfusion: reads a `.onnx` file and writes the equivalent `dnn!`
//! declaration, which the compiler then compiles like a hand-written one.
//!
//! ```text
//! bytes -> proto (prost) -> import (shapes folded, nodes mapped one by one) -> DSL text
//!                                   \-> map: one node -> DSL statements or a refusal
//! ```
//!
//! - [`proto`]: the part of `onnx.proto` that is read, as hand-written prost messages.
//! - [`map`](mod@map): the per-node mapping (op type, opset, attributes -> DSL), also used
//!   by the conformance crate on ONNX's node tests.
//! - [`import`](mod@import): a whole graph to one `model` declaration.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod fold;
pub mod import;
pub mod map;
pub mod proto;

pub use import::{import, ImportOptions, Imported};
pub use map::*;
