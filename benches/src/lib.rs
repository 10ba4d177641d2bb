//! Shared setup of the benchmarks: reference models with their weights and inputs.

use dnnfusion::{npy, Model, Params};
use dnnfusion_compiler::{interp, ir::Graph, lower_str};
use dnnfusion_models::ReferenceData;
use ndarray::{ArrayD, IxDyn};

/// A model ready to run: parameters loaded, buffers allocated once.
pub struct Prepared<M: Model> {
    /// The model.
    pub model: M,
    /// The reference input.
    pub input: Vec<f32>,
    /// Output buffer.
    pub output: Vec<f32>,
    /// Arena.
    pub arena: Vec<f32>,
}

impl<M: Model> Prepared<M> {
    /// Loads `data`'s weights and input.
    pub fn new(data: &ReferenceData) -> Self {
        let mut params = vec![0.0f32; M::PARAM_LEN];
        dnnfusion::runtime::safetensors::load_into(data.weights, M::PARAMS, &mut params).expect("weights load");
        let model = M::from_static_params(Params::owned(params)).expect("params");
        let input = npy::read_f32(data.input).expect("input").iter().copied().collect();
        let output = vec![0.0; M::OUTPUT_SHAPES[0].iter().product()];
        Prepared { model, input, output, arena: vec![0.0; M::ARENA_LEN] }
    }

    /// One inference.
    pub fn run(&mut self) {
        self.model.run_slices(&[&self.input], &mut [&mut self.output], &mut self.arena).expect("run");
    }
}

/// The reference interpreter on the same graph and weights (plain ndarray, op by op).
pub struct NdarrayBaseline {
    graph: Graph,
    params: Vec<ArrayD<f32>>,
    input: ArrayD<f32>,
}

impl NdarrayBaseline {
    /// Lowers `name` from the zoo source and loads `data`.
    pub fn new(name: &str, data: &ReferenceData, flat_params: &[f32]) -> Self {
        let graph = lower_str(dnnfusion_models::reference::SOURCE)
            .expect("zoo source lowers")
            .into_iter()
            .find(|m| m.name == name)
            .expect("model in zoo")
            .graph;
        let mut offset = 0;
        let params = graph
            .params
            .iter()
            .map(|p| {
                let len: usize = p.shape.iter().product();
                let a = ArrayD::from_shape_vec(IxDyn(&p.shape), flat_params[offset..offset + len].to_vec()).expect("shape");
                offset += len;
                a
            })
            .collect();
        let input = npy::read_f32(data.input).expect("input");
        NdarrayBaseline { graph, params, input }
    }

    /// One inference.
    pub fn run(&self) -> Vec<ArrayD<f32>> {
        interp::interpret(&self.graph, std::slice::from_ref(&self.input), &self.params).expect("interpret")
    }
}
