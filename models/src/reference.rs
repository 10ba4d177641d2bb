//! The four reference models, as defined in PyTorch by `models.py` of the peer tools
//! (`tools/peers/` of the project's shared folder, `../shared/tools/peers/models.py` from
//! the repository root: it is not part of this repository). Its `gen_models.py` wrote
//! `models/reference/<name>/` (seeded, untrained weights; `meta.json` records the seeds).

/// Declares the models with `dnn!` and keeps their source text in [`SOURCE`], so tests
/// can lower the same declaration for the reference interpreter.
macro_rules! declare {
    ($($tokens:tt)*) => {
        dnnfusion::dnn! { $($tokens)* }
        /// The DSL source of the models in this module.
        pub const SOURCE: &str = stringify!($($tokens)*);

        /// The same models with fusion off (one kernel call per op), for side-by-side
        /// measurement and checks.
        pub mod unfused {
            dnnfusion::dnn! { #![fusion(off)] $($tokens)* }
        }

        /// The same models with the value-changing rewrite rules on
        /// (`#![rewrite(fast_math)]`).
        pub mod fast_math {
            dnnfusion::dnn! { #![rewrite(fast_math)] $($tokens)* }
        }
    };
}

/// Passes the DSL of the reference models to a macro, after `prefix` tokens:
/// `reference_models!(dnnfusion::dnn; #![rewrite(off)])` declares them with rewriting
/// off (the benches use it for side-by-side variants).
#[macro_export]
macro_rules! reference_models {
    ($($callback:ident)::+ ; $($prefix:tt)*) => {
        $($callback)::+! {
            $($prefix)*
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
        }
    };
}

reference_models!(declare;);
