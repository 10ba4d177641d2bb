//! torchvision's `resnet18` and `mobilenet_v2` at 224x224, written in the DSL with the
//! `state_dict` names of `torchvision.models`, so their checkpoints load unchanged. Their
//! reference data (seeded weights, input, PyTorch outputs; 47 MB for resnet18) stay in
//! `../shared/reference/<name>/` and are read at run time ([`reference_dir`]).

declare_with_unfused! {
    /// torchvision's `BasicBlock`: two 3x3 conv + batch norm, a projection shortcut
    /// (`downsample.0` conv, `downsample.1` batch norm) when the shape changes.
    block basic_block(x: [N, C, H, W], planes, stride = 1) {
        let conv1 = conv2d(x, planes, 3, stride = stride, padding = 1, bias = false);
        let bn1 = batch_norm(conv1, planes);
        let conv2 = conv2d(relu(bn1), planes, 3, padding = 1, bias = false);
        let bn2 = batch_norm(conv2, planes);
        let mut shortcut = x;
        if stride != 1 || C != planes {
            let projected = conv2d(x, planes, 1, stride = stride, bias = false, key = "downsample.0");
            shortcut = batch_norm(projected, planes, key = "downsample.1");
        }
        relu(bn2 + shortcut)
    }

    /// torchvision `resnet18`: 1000 logits.
    pub model ResNet18(x: [1, 3, 224, 224]) -> [1, 1000] {
        let conv1 = conv2d(x, 64, 7, stride = 2, padding = 3, bias = false);
        let bn1 = batch_norm(conv1, 64);
        let mut h = max_pool2d(relu(bn1), 3, stride = 2, padding = 1);
        for i in 0..2 {
            #[key = "layer1.{i}"]
            h = basic_block(h, 64);
        }
        #[key = "layer2.0"] h = basic_block(h, 128, stride = 2);
        #[key = "layer2.1"] h = basic_block(h, 128);
        #[key = "layer3.0"] h = basic_block(h, 256, stride = 2);
        #[key = "layer3.1"] h = basic_block(h, 256);
        #[key = "layer4.0"] h = basic_block(h, 512, stride = 2);
        #[key = "layer4.1"] h = basic_block(h, 512);
        let fc = linear(flatten(adaptive_avg_pool2d(h, 1)), 1000);
        fc
    }

    /// torchvision's `Conv2dNormActivation`: conv without bias (key `0`), batch norm
    /// (key `1`), ReLU6 unless `act` is false.
    block conv_bn(x: [N, C, H, W], out, kernel, stride = 1, groups = 1, act = true) {
        let conv = conv2d(x, out, kernel, stride = stride, padding = (kernel - 1) / 2,
                          groups = groups, bias = false, key = "0");
        let mut y = batch_norm(conv, out, key = "1");
        if act {
            y = relu6(y);
        }
        y
    }

    /// torchvision's `InvertedResidual`: 1x1 expansion (absent when `expand` is 1),
    /// depthwise 3x3, 1x1 projection; a residual add when the shape is kept.
    block inverted_residual(x: [N, C, H, W], out, stride, expand) {
        let mut h = x;
        if expand != 1 {
            #[key = "conv.0"] h = conv_bn(h, C * expand, 1);
            #[key = "conv.1"] h = conv_bn(h, C * expand, 3, stride = stride, groups = C * expand);
            let project = conv2d(h, out, 1, bias = false, key = "conv.2");
            h = batch_norm(project, out, key = "conv.3");
        } else {
            #[key = "conv.0"] h = conv_bn(h, C, 3, stride = stride, groups = C);
            let project = conv2d(h, out, 1, bias = false, key = "conv.1");
            h = batch_norm(project, out, key = "conv.2");
        }
        if stride == 1 && C == out {
            h = x + h;
        }
        h
    }

    /// torchvision `mobilenet_v2` (width 1.0): 1000 logits.
    pub model MobileNetV2(x: [1, 3, 224, 224]) -> [1, 1000] {
        #[key = "features.0"] let mut h = conv_bn(x, 32, 3, stride = 2);
        #[key = "features.1"] h = inverted_residual(h, 16, 1, 1);
        #[key = "features.2"] h = inverted_residual(h, 24, 2, 6);
        #[key = "features.3"] h = inverted_residual(h, 24, 1, 6);
        #[key = "features.4"] h = inverted_residual(h, 32, 2, 6);
        for i in 5..7 {
            #[key = "features.{i}"] h = inverted_residual(h, 32, 1, 6);
        }
        #[key = "features.7"] h = inverted_residual(h, 64, 2, 6);
        for i in 8..11 {
            #[key = "features.{i}"] h = inverted_residual(h, 64, 1, 6);
        }
        for i in 11..14 {
            #[key = "features.{i}"] h = inverted_residual(h, 96, 1, 6);
        }
        #[key = "features.14"] h = inverted_residual(h, 160, 2, 6);
        for i in 15..17 {
            #[key = "features.{i}"] h = inverted_residual(h, 160, 1, 6);
        }
        #[key = "features.17"] h = inverted_residual(h, 320, 1, 6);
        #[key = "features.18"] h = conv_bn(h, 1280, 1);
        let pooled = flatten(adaptive_avg_pool2d(h, 1));
        let logits = linear(dropout(pooled, 0.2), 1000, key = "classifier.1");
        logits
    }
}

/// `../shared/reference/<name>/` beside the repository (where CI lays it too), which
/// holds `weights.safetensors`, `input.npy`, `output.npy` and `output_fp64.npy`.
pub fn reference_dir(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/reference")
        .join(name)
}
