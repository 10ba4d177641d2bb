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
                return Err(RunError::input_shape(index, shape, input.shape()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use std::string::ToString;

    crate::dnn! {
        pub model Column(x: [3, 1]) -> [3, 1] {
            relu(x)
        }
    }

    #[test]
    fn a_shape_mismatch_states_both_shapes() {
        let model = Column::from_params(crate::Params::borrowed(&[])).unwrap();
        let row = Array2::<f32>::zeros((1, 3)).into_dyn();
        let err = model.infer_arrays(&[row.view()]).unwrap_err();
        assert_eq!(err, RunError::input_shape(0, &[3, 1], &[1, 3]));
        assert_eq!(
            err.to_string(),
            "input 0 has shape [1, 3], the model takes [3, 1]"
        );
        let deep = ArrayD::<f32>::zeros(IxDyn(&[1; 9]));
        let err = model.infer_arrays(&[deep.view()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "input 0 has shape [1, 1, 1, 1, 1, 1, 1, 1] (rank 9, first 8 dims shown), the model takes [3, 1]"
        );
        let column = Array2::<f32>::from_elem((3, 1), -1.0).into_dyn();
        let out = model.infer_arrays(&[column.view()]).unwrap();
        assert_eq!(out[0].shape(), &[3, 1]);
    }
}
