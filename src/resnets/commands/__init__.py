"""The `resnets` command's subcommands, a module per kind of work, each parser beside its handler.

`models` (the registry and its costs), `train`, `use` (eval, predict, embed, export, convert),
`experiments` (the paper's experiments, the report, the demo) and `data` (pack); `arguments` holds
what their parsers share. `resnets.cli` registers them and maps errors to exit statuses.
"""

# Each command and its line in `resnets --help`, in that order: read by the commands' parsers and by
# `resnets.launch`, which answers --help without importing them (and torch).
SUMMARIES = {
    "models": "list every registered model with its parameters and GMACs",
    "flops": "parameters and multiply-adds of one model, per stage",
    "train": "train a model (see --recipe); resumes an interrupted run in --out",
    "eval": "top-1/top-5 test error of a checkpoint; with --out, where it fails",
    "experiment": "the paper's experiments",
    "grad-flow": "gradient reaching each layer (RMS), weight gradients, each block's gain",
    "responses": "std of each 3x3 layer's response, plain against residual (Fig. 7)",
    "report": "one self-contained HTML page of runs and experiments",
    "predict": "top-k classes of image files with a trained checkpoint",
    "embed": "pre-logits embeddings of image files, saved as .npy",
    "export": "ONNX, TorchScript, torch.export or safetensors, checked against PyTorch",
    "convert": "a torchvision or timm ResNet state dict to resnets safetensors",
    "pack": "a dataset as tar shards and an index (train from them with --data shards:DIR or shards:URL)",
    "demo": "the degradation problem on Fashion-MNIST: plain/ResNet 20 and 56 (make demo)",
}
