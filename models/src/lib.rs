//! The dnnfusion model zoo: networks declared with `dnn!`.
//!
//! The reference models (`mlp`, `lenet`, `bert_tiny`, `unet_small`) are the PyTorch
//! models of `reference/<name>/` (weights, input and PyTorch outputs shipped beside
//! them), written in the DSL with PyTorch's `state_dict` names, so their weights load
//! unchanged.

/// Declares models with `dnn!` in the calling module, keeps their source text in `SOURCE`
/// and declares them again with fusion off in a module `unfused` (one kernel call per op).
macro_rules! declare_with_unfused {
    ($($tokens:tt)*) => {
        dnnfusion::dnn! { $($tokens)* }
        /// The DSL source of the models in this module.
        pub const SOURCE: &str = stringify!($($tokens)*);

        /// The same models with fusion off (one kernel call per op).
        pub mod unfused {
            dnnfusion::dnn! { #![fusion(off)] $($tokens)* }
        }
    };
}

pub mod bert6;
pub mod reference;
pub mod torchvision;

/// Weights, input and PyTorch outputs of one reference model, embedded in the binary.
pub struct ReferenceData {
    /// Model name as used by reports and benches (`lenet`).
    pub name: &'static str,
    /// `weights.safetensors`
    pub weights: &'static [u8],
    /// `input.npy`
    pub input: &'static [u8],
    /// `output.npy`, PyTorch float32 eager output
    pub output: &'static [u8],
    /// `output_fp64.npy`, the same model in float64
    pub output_fp64: &'static [u8],
}

macro_rules! reference_data {
    ($name:literal) => {
        ReferenceData {
            name: $name,
            weights: include_bytes!(concat!("../reference/", $name, "/weights.safetensors")),
            input: include_bytes!(concat!("../reference/", $name, "/input.npy")),
            output: include_bytes!(concat!("../reference/", $name, "/output.npy")),
            output_fp64: include_bytes!(concat!("../reference/", $name, "/output_fp64.npy")),
        }
    };
}

/// Reference data of `mlp`.
pub const MLP_DATA: ReferenceData = reference_data!("mlp");
/// Reference data of `lenet`.
pub const LENET_DATA: ReferenceData = reference_data!("lenet");
/// Reference data of `bert_tiny`.
pub const BERT_TINY_DATA: ReferenceData = reference_data!("bert_tiny");
/// Reference data of `unet_small`.
pub const UNET_SMALL_DATA: ReferenceData = reference_data!("unet_small");

/// The fusion reports of every model in the zoo with `#![rewrite(fast_math)]`.
pub fn fast_math_reports() -> Vec<dnnfusion::runtime::FusionReport> {
    use reference::fast_math::*;
    vec![
        Mlp::FUSION_REPORT,
        LeNet::FUSION_REPORT,
        BertTiny::FUSION_REPORT,
        UNetSmall::FUSION_REPORT,
    ]
}

/// The fusion reports of every model in the zoo, fused then with fusion off.
pub fn fusion_reports() -> Vec<(
    dnnfusion::runtime::FusionReport,
    dnnfusion::runtime::FusionReport,
)> {
    use reference::*;
    vec![
        (Mlp::FUSION_REPORT, unfused::Mlp::FUSION_REPORT),
        (LeNet::FUSION_REPORT, unfused::LeNet::FUSION_REPORT),
        (BertTiny::FUSION_REPORT, unfused::BertTiny::FUSION_REPORT),
        (UNetSmall::FUSION_REPORT, unfused::UNetSmall::FUSION_REPORT),
    ]
}
