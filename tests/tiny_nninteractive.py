"""A tiny, randomly initialised nnInteractive model folder, made on the spot.

It has the interface of the official checkpoint (plans.json, dataset.json, inference_info.json,
LICENSE, fold_0/checkpoint_final.pth with a PlainConvUNet taking the image and nnInteractive's
seven interaction channels) but a 2-stage network of 4 and 8 features, so that the backend can
be driven end to end on a CPU in about a second per click. Its masks mean nothing; tests check
what the backend gives it and what it does with what comes back.
"""

from __future__ import annotations

import json
from pathlib import Path

#: nnInteractive's interaction channels (previous segmentation, box/lasso, points, scribbles)
#: plus one: the network's extra inputs besides the image
INTERACTION_CHANNELS = 7


def make_tiny_model(
    folder: Path,
    *,
    channels: int = 1,
    patch: tuple[int, int, int] = (64, 64, 64),
    seed: int = 0,
    licence: str | None = "CC0-1.0 (a test model)",
) -> Path:
    """Write the model folder and return it. ``patch`` must exceed nnInteractive's refinement
    margin (24 voxels each side) on every axis."""
    import torch
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    folder = Path(folder)
    (folder / "fold_0").mkdir(parents=True, exist_ok=True)
    features, kernels, strides = [4, 8], [[3, 3, 3]] * 2, [[1, 1, 1], [2, 2, 2]]
    norm_kwargs, nonlin_kwargs = {"eps": 1e-5, "affine": True}, {"inplace": True}
    arch = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": 2,
            "features_per_stage": features,
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": kernels,
            "strides": strides,
            "n_conv_per_stage": [1, 1],
            "n_conv_per_stage_decoder": [1],
            "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": norm_kwargs,
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": nonlin_kwargs,
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    resample = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    configuration = {
        "data_identifier": "nnUNetPlans_3d_fullres",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 1,
        "patch_size": list(patch),
        "median_image_size_in_voxels": list(patch),
        "spacing": [1, 1, 1],
        "normalization_schemes": ["ZScoreNormalization"] * channels,
        "use_mask_for_norm": [False] * channels,
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": resample,
        "resampling_fn_seg_kwargs": {**resample, "is_seg": True, "order": 1},
        "resampling_fn_probabilities_kwargs": {**resample, "order": 1},
        "architecture": arch,
        "batch_dice": False,
    }
    plans = {
        "dataset_name": "Dataset999_HistovolTiny",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1, 1, 1],
        "original_median_shape_after_transp": list(patch),
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": configuration},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {},
    }
    dataset = {
        "channel_names": {str(i): f"channel {i}" for i in range(channels)},
        "labels": {"background": 0, "object": 1},
        "numTraining": 0,
        "file_ending": ".nii.gz",
    }
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset))
    (folder / "inference_info.json").write_text(json.dumps({"point_radius": 2}))
    if licence is not None:
        (folder / "LICENSE").write_text(licence + "\nhttps://example.org/licence\n")
    torch.manual_seed(seed)
    net = PlainConvUNet(
        channels + INTERACTION_CHANNELS,
        2,
        features,
        torch.nn.Conv3d,
        kernels,
        strides,
        [1, 1],
        2,
        [1],
        True,
        torch.nn.InstanceNorm3d,
        norm_kwargs,
        None,
        None,
        torch.nn.LeakyReLU,
        nonlin_kwargs,
        deep_supervision=False,
    )
    checkpoint = {
        "trainer_name": "nnInteractiveTrainer_stub",
        "init_args": {"configuration": "3d_fullres"},
        "network_weights": net.state_dict(),
    }
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    return folder
