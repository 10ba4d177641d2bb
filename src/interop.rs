//! ndarray in and out (feature `std`).

use std::vec::Vec;

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::{Model, RunError};

/// ndarray convenience for every generated model.
pub trait ModelExt: Model {
    /// Runs on ndarray inputs (any layout) and returns one array per output.
    fn infer_arrays(&self, inputs: &[ArrayViewD<'_, f32>]) -> Result<Vec<ArrayD<f32>>, RunError> {
        if inputs.len() != Self::INPUT_SHAPES.len() {
            return Err(RunError::InputCount {
                expected: Self::INPUT_SHAPES.len(),
                found: inputs.len(),
            });
        }
        let mut owned: Vec<Vec<f32>> = Vec::new();
        for (index, (input, shape)) in inputs.iter().zip(Self::INPUT_SHAPES).enumerate() {
            if input.shape() != *shape {
                return Err(RunError::InputLength {
                    index,
                    expected: shape.iter().product(),
                    found: input.len(),
                });
            }
            owned.push(input.iter().copied().collect());
        }
        let views: Vec<&[f32]> = owned.iter().map(|v| v.as_slice()).collect();
        let outputs = crate::infer(self, &views)?;
        Ok(outputs
            .into_iter()
            .zip(Self::OUTPUT_SHAPES)
            .map(|(data, shape)| {
                ArrayD::from_shape_vec(IxDyn(shape), data)
                    .unwrap_or_else(|_| ArrayD::zeros(IxDyn(shape)))
            })
            .collect())
    }
}

impl<M: Model> ModelExt for M {}
