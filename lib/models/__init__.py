"""The source networks: architectures (archs, backbone, clip, vit), checkpoints and masks,
source training and IMP (pretrain, prune, states), quantization (quant), and the registry of
source kinds a run transfers from (sources)."""
