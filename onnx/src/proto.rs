//! The part of `onnx.proto` the importer reads, as hand-written prost messages (no
//! protoc, no build script). Field numbers are those of onnx/onnx's `onnx.proto`; fields
//! not listed here are skipped by the decoder, as protobuf requires.
//!
//! ```text
//! ModelProto { ir_version: 1, opset_import: 8, graph: 7 }
//!   GraphProto { node: 1, name: 2, initializer: 5, input: 11, output: 12, value_info: 13 }
//!     NodeProto { input: 1, output: 2, name: 3, op_type: 4, attribute: 5, domain: 7 }
//!     TensorProto { dims: 1, data_type: 2, float_data: 4, int32_data: 5, int64_data: 7,
//!                   name: 8, raw_data: 9, double_data: 10, external_data: 13, data_location: 14 }
//! ```
//!
//! [`decode_model`] never panics: prost reports malformed bytes as an error.

use prost::Message;

/// `ModelProto`: the file.
#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    /// The IR version the file follows.
    #[prost(int64, optional, tag = "1")]
    pub ir_version: Option<i64>,
    /// The operator sets, one per domain; the default domain is `""` or `ai.onnx`.
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    /// The tool that wrote the file.
    #[prost(string, optional, tag = "2")]
    pub producer_name: Option<String>,
    /// The graph.
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
}

/// `OperatorSetIdProto`: one imported operator set.
#[derive(Clone, PartialEq, Message)]
pub struct OperatorSetIdProto {
    /// The domain (`""` for the default ONNX operators).
    #[prost(string, optional, tag = "1")]
    pub domain: Option<String>,
    /// Its version.
    #[prost(int64, optional, tag = "2")]
    pub version: Option<i64>,
}

/// `GraphProto`: nodes in topological order, weights, inputs and outputs.
#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    /// The nodes, sorted topologically.
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    /// The graph's name.
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
    /// Constant tensors (the weights), by name.
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    /// The inputs (initializers may be listed here too).
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    /// The outputs.
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
    /// Types and shapes of intermediate values, when the writer gave them.
    #[prost(message, repeated, tag = "13")]
    pub value_info: Vec<ValueInfoProto>,
}

/// `NodeProto`: one operator call.
#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    /// Input value names (`""` for a skipped optional input).
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    /// Output value names (`""` for a skipped optional output).
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    /// The node's name (may be empty).
    #[prost(string, optional, tag = "3")]
    pub name: Option<String>,
    /// The operator (`Conv`).
    #[prost(string, optional, tag = "4")]
    pub op_type: Option<String>,
    /// The operator's domain (`""` for ONNX's own).
    #[prost(string, optional, tag = "7")]
    pub domain: Option<String>,
    /// The attributes.
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
}

/// `AttributeProto`: one named attribute value.
#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    /// The name.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// Set in a function body only: the value comes from the caller's attribute.
    #[prost(string, optional, tag = "21")]
    pub ref_attr_name: Option<String>,
    /// Which field holds the value (`AttributeType`: FLOAT 1, INT 2, STRING 3, TENSOR 4,
    /// GRAPH 5, FLOATS 6, INTS 7, STRINGS 8, TENSORS 9, GRAPHS 10, SPARSE_TENSOR 11,
    /// SPARSE_TENSORS 12).
    #[prost(int32, optional, tag = "20")]
    pub r#type: Option<i32>,
    /// FLOAT
    #[prost(float, optional, tag = "2")]
    pub f: Option<f32>,
    /// INT
    #[prost(int64, optional, tag = "3")]
    pub i: Option<i64>,
    /// STRING (UTF-8 bytes)
    #[prost(bytes = "vec", optional, tag = "4")]
    pub s: Option<Vec<u8>>,
    /// TENSOR
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    /// FLOATS
    #[prost(float, repeated, tag = "7")]
    pub floats: Vec<f32>,
    /// INTS
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
    /// STRINGS
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub strings: Vec<Vec<u8>>,
}

/// `AttributeProto.AttributeType` values the importer tells apart.
pub mod attribute_type {
    /// FLOAT
    pub const FLOAT: i32 = 1;
    /// INT
    pub const INT: i32 = 2;
    /// STRING
    pub const STRING: i32 = 3;
    /// TENSOR
    pub const TENSOR: i32 = 4;
    /// GRAPH (a subgraph: `If`, `Loop`, `Scan`)
    pub const GRAPH: i32 = 5;
    /// FLOATS
    pub const FLOATS: i32 = 6;
    /// INTS
    pub const INTS: i32 = 7;
    /// STRINGS
    pub const STRINGS: i32 = 8;
}

/// `TensorProto`: a tensor's dims, type and elements (in one of the `*_data` fields,
/// in `raw_data`, or in an external file).
#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    /// The shape.
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    /// The element type (see [`data_type`]).
    #[prost(int32, optional, tag = "2")]
    pub data_type: Option<i32>,
    /// FLOAT (and COMPLEX64) elements.
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    /// INT32, INT16, INT8, UINT16, UINT8, BOOL and FLOAT16 elements.
    #[prost(int32, repeated, tag = "5")]
    pub int32_data: Vec<i32>,
    /// INT64 elements.
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    /// The name (an initializer's name is the value it defines).
    #[prost(string, optional, tag = "8")]
    pub name: Option<String>,
    /// The elements as fixed-width little-endian bytes.
    #[prost(bytes = "vec", optional, tag = "9")]
    pub raw_data: Option<Vec<u8>>,
    /// DOUBLE elements.
    #[prost(double, repeated, tag = "10")]
    pub double_data: Vec<f64>,
    /// Where the data lives when it is outside the file (`location`, `offset`, ...).
    #[prost(message, repeated, tag = "13")]
    pub external_data: Vec<StringStringEntryProto>,
    /// 0: in this message; 1: external (see `external_data`).
    #[prost(int32, optional, tag = "14")]
    pub data_location: Option<i32>,
}

/// `TensorProto.DataType` values.
pub mod data_type {
    /// float32
    pub const FLOAT: i32 = 1;
    /// uint8
    pub const UINT8: i32 = 2;
    /// int8
    pub const INT8: i32 = 3;
    /// int32
    pub const INT32: i32 = 6;
    /// int64
    pub const INT64: i32 = 7;
    /// bool
    pub const BOOL: i32 = 9;
    /// float16
    pub const FLOAT16: i32 = 10;
    /// float64
    pub const DOUBLE: i32 = 11;

    /// The numpy name of a data type, for messages.
    pub fn name(code: i32) -> &'static str {
        match code {
            1 => "float32",
            2 => "uint8",
            3 => "int8",
            4 => "uint16",
            5 => "int16",
            6 => "int32",
            7 => "int64",
            8 => "string",
            9 => "bool",
            10 => "float16",
            11 => "float64",
            12 => "uint32",
            13 => "uint64",
            14 => "complex64",
            15 => "complex128",
            16 => "bfloat16",
            _ => "an unknown type",
        }
    }
}

/// `StringStringEntryProto`: one key-value pair.
#[derive(Clone, PartialEq, Message)]
pub struct StringStringEntryProto {
    /// The key.
    #[prost(string, optional, tag = "1")]
    pub key: Option<String>,
    /// The value.
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

/// `ValueInfoProto`: a value's name and type.
#[derive(Clone, PartialEq, Message)]
pub struct ValueInfoProto {
    /// The value's name.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// Its type.
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

/// `TypeProto`; only the tensor case (field 1 of the `value` oneof) is read.
#[derive(Clone, PartialEq, Message)]
pub struct TypeProto {
    /// The tensor type; absent for sequences, maps and optionals.
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TypeProtoTensor>,
}

/// `TypeProto.Tensor`: element type and shape.
#[derive(Clone, PartialEq, Message)]
pub struct TypeProtoTensor {
    /// The element type (see [`data_type`]).
    #[prost(int32, optional, tag = "1")]
    pub elem_type: Option<i32>,
    /// The shape; absent when unknown.
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

/// `TensorShapeProto`: one entry per axis.
#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    /// The axes.
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

/// `TensorShapeProto.Dimension`: a number, a name (a dynamic axis), or neither.
#[derive(Clone, PartialEq, Message)]
pub struct Dimension {
    /// A fixed length.
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    /// A symbolic name (`batch`): the length is chosen by the user.
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
}

/// Decodes a `.onnx` file. Any bytes give a model or an error, never a panic.
pub fn decode_model(bytes: &[u8]) -> Result<ModelProto, String> {
    ModelProto::decode(bytes)
        .map_err(|e| format!("the file is not a valid ONNX model (protobuf decoding failed: {e})"))
}

/// Decodes one `TensorProto` (a `.pb` file of ONNX's test data sets).
pub fn decode_tensor(bytes: &[u8]) -> Result<TensorProto, String> {
    TensorProto::decode(bytes)
        .map_err(|e| format!("not a valid TensorProto (protobuf decoding failed: {e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_round_trips_through_the_wire_format() {
        let model = ModelProto {
            ir_version: Some(8),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(17),
            }],
            producer_name: Some("test".to_string()),
            graph: Some(GraphProto {
                node: vec![NodeProto {
                    input: vec!["x".to_string()],
                    output: vec!["y".to_string()],
                    name: Some("relu".to_string()),
                    op_type: Some("Relu".to_string()),
                    domain: None,
                    attribute: Vec::new(),
                }],
                name: Some("g".to_string()),
                initializer: vec![TensorProto {
                    dims: vec![2],
                    data_type: Some(data_type::FLOAT),
                    raw_data: Some(vec![0, 0, 128, 63, 0, 0, 0, 64]),
                    name: Some("w".to_string()),
                    ..TensorProto::default()
                }],
                ..GraphProto::default()
            }),
        };
        let bytes = model.encode_to_vec();
        assert_eq!(decode_model(&bytes).unwrap(), model);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&[0xffu8; 16][..], &[0x3a, 0x80], &[0x0a, 0x05, 0x01]] {
            assert!(decode_model(bytes).is_err());
        }
    }
}
