"""The digits diffusion model: the package's loop against diffusers' schedulers, the weights, the grades."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from llmsforme.diffusion import (
    DEFAULT_GUIDANCE,
    DigitsModel,
    WeightsProblem,
    add_noise,
    cosine_schedule,
    ddim_step,
    ddpm_step,
    digit_classifier,
    diversity,
    grade,
    inference_timesteps,
    linear_schedule,
    load_digits_model,
    sample,
    shipped_folder,
)

ROOT = Path(__file__).resolve().parents[1]
T = 200


def scheduler(kind, **options):
    cls = DDIMScheduler if kind == "ddim" else DDPMScheduler
    return cls(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2", timestep_spacing="trailing", **options)


@pytest.fixture(scope="module")
def model():
    return load_digits_model()


@pytest.fixture(scope="module")
def classifier():
    return digit_classifier()


# --- the forward process ---------------------------------------------------------------


def test_schedules_equal_diffusers():
    assert torch.equal(cosine_schedule(T), scheduler("ddpm").alphas_cumprod)
    linear = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    assert torch.allclose(linear_schedule(1000), linear.alphas_cumprod, atol=1e-7)


def test_add_noise_equals_diffusers():
    generator = torch.Generator().manual_seed(0)
    clean, noise = torch.rand(6, 1, 16, 16, generator=generator) * 2 - 1, torch.randn(6, 1, 16, 16, generator=generator)
    t = torch.tensor([0, 1, 50, 100, 198, 199])
    ours = add_noise(clean, noise, t, cosine_schedule(T))
    assert torch.allclose(ours, scheduler("ddpm").add_noise(clean, noise, t), atol=1e-6)


def test_add_noise_checks_its_input():
    abar, x = cosine_schedule(T), torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match="timesteps must be in"):
        add_noise(x, x, torch.tensor([0, 200]), abar)
    with pytest.raises(ValueError, match="one timestep per image"):
        add_noise(x, x, torch.tensor([0]), abar)
    with pytest.raises(ValueError, match="same 4-D shape"):
        add_noise(x, x[:1], torch.tensor([0, 1]), abar)
    with pytest.raises(ValueError, match="num_train_timesteps"):
        cosine_schedule(1)


# --- one step, against diffusers ---------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 3, 5, 7, 10, 25, 50, 200])
def test_timesteps_equal_diffusers_trailing_spacing(steps):
    reference = scheduler("ddpm")
    reference.set_timesteps(steps)
    assert inference_timesteps(T, steps) == reference.timesteps.tolist()


@pytest.mark.parametrize("kind", ["ddim", "ddpm"])
def test_every_step_equals_diffusers(kind):
    reference, abar = scheduler(kind), cosine_schedule(T)
    reference.set_timesteps(25)
    times = inference_timesteps(T, 25)
    generator = torch.Generator().manual_seed(1)
    for i, t in enumerate(times):
        x, noise_pred = torch.randn(4, 1, 16, 16, generator=generator), torch.randn(4, 1, 16, 16, generator=generator)
        prev_t = times[i + 1] if i + 1 < len(times) else -1
        if kind == "ddim":
            ours, _ = ddim_step(noise_pred, t, prev_t, x, abar)
            theirs = reference.step(noise_pred, t, x).prev_sample
        else:
            ours, _ = ddpm_step(noise_pred, t, prev_t, x, abar, torch.Generator().manual_seed(i))
            theirs = reference.step(noise_pred, t, x, generator=torch.Generator().manual_seed(i)).prev_sample
        assert torch.allclose(ours, theirs, atol=1e-6), (kind, t)


@pytest.mark.parametrize("kind", ["ddim", "ddpm"])
def test_every_v_prediction_step_equals_diffusers(kind):
    reference, abar = scheduler(kind, prediction_type="v_prediction"), cosine_schedule(T)
    reference.set_timesteps(10)
    times = inference_timesteps(T, 10)
    generator = torch.Generator().manual_seed(2)
    for i, t in enumerate(times):
        x, v = torch.randn(4, 1, 16, 16, generator=generator), torch.randn(4, 1, 16, 16, generator=generator)
        prev_t = times[i + 1] if i + 1 < len(times) else -1
        if kind == "ddim":
            ours, x0 = ddim_step(v, t, prev_t, x, abar, prediction_type="v_prediction")
            result = reference.step(v, t, x)
        else:
            seeded = torch.Generator().manual_seed(i)
            ours, x0 = ddpm_step(v, t, prev_t, x, abar, seeded, prediction_type="v_prediction")
            result = reference.step(v, t, x, generator=torch.Generator().manual_seed(i))
        assert torch.allclose(ours, result.prev_sample, atol=1e-6), (kind, t)
        assert torch.allclose(x0, result.pred_original_sample, atol=1e-6), (kind, t)


def test_v_prediction_needs_no_division_at_the_last_timestep():
    abar, x = cosine_schedule(T), torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    clean = torch.full_like(x, 0.5)
    v = abar[199] ** 0.5 * x - (1 - abar[199]) ** 0.5 * clean  # the exact v if x were pure noise
    _, x0 = ddim_step(v + 0.01, 199, 179, x, abar, prediction_type="v_prediction")
    assert (x0 - clean).abs().max() < 0.02  # an error of 0.01 stays about 0.01
    _, x0 = ddim_step(x + 0.01, 199, 179, x, abar)  # the same error in a predicted noise
    assert (x0.abs() == 1).all()  # multiplied by about 4,000, then clamped


def test_a_bad_prediction_type_gets_a_clear_error():
    abar, x = cosine_schedule(T), torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match="prediction_type must be one of"):
        ddim_step(x, 10, 5, x, abar, prediction_type="sample")
    with pytest.raises(ValueError, match="prediction_type must be one of"):
        ddpm_step(x, 10, 5, x, abar, prediction_type="v")


# --- the whole loop, against a loop over diffusers' schedulers ---------------------------------


def diffusers_loop(model, digits, kind, steps, guidance, seed, prediction_type="epsilon"):
    """The same sampling, written with diffusers' schedulers and the guidance formula inline."""
    reference = scheduler(kind, prediction_type=prediction_type)
    reference.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    labels = torch.tensor(digits)
    nothing = torch.full_like(labels, model.null_label)
    x = torch.randn((len(digits), 1, 16, 16), generator=generator)
    with torch.no_grad():
        for t in reference.timesteps:
            both = model.unet(torch.cat([x, x]), t, class_labels=torch.cat([labels, nothing])).sample
            cond, uncond = both.chunk(2)
            x = reference.step(uncond + guidance * (cond - uncond), t, x, generator=generator).prev_sample
    return (x.clamp(-1, 1) + 1) / 2


@pytest.mark.parametrize(
    ("kind", "steps"),
    # DDIM in diffusers steps back by T // steps, which is the next timestep
    # only when steps divides T; DDPM follows the list, so any count works.
    [("ddim", 5), ("ddim", 10), ("ddim", 25), ("ddim", 50), ("ddpm", 7), ("ddpm", 25)],
)
def test_sample_equals_a_loop_over_diffusers_schedulers(model, kind, steps):
    digits = [0, 3, 7, 9]
    ours = sample(model, digits, sampler=kind, steps=steps, guidance_scale=2.5, seed=5)
    theirs = diffusers_loop(model, digits, kind, steps, 2.5, 5)
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


@pytest.mark.parametrize("kind", ["ddim", "ddpm"])
def test_a_v_prediction_model_samples_like_diffusers(model, kind):
    """The shipped network read as if it predicted v: the numbers are nonsense, the loop must still match."""
    as_v = DigitsModel(
        model.unet, model.alphas_cumprod, model.null_label, model.image_size, model.manifest, "v_prediction"
    )
    ours = sample(as_v, [1, 4], sampler=kind, steps=10, guidance_scale=2.0, seed=3)
    theirs = diffusers_loop(as_v, [1, 4], kind, 10, 2.0, 3, prediction_type="v_prediction")
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()
    assert not torch.allclose(ours, sample(model, [1, 4], sampler=kind, steps=10, guidance_scale=2.0, seed=3))


def test_sampling_is_seeded_and_traced(model):
    first, trace = sample(model, [1, 2, 3], steps=10, seed=3, trace=True)
    assert torch.equal(first, sample(model, [1, 2, 3], steps=10, seed=3))
    assert not torch.equal(first, sample(model, [1, 2, 3], steps=10, seed=4))
    ddpm = [sample(model, [1, 2, 3], sampler="ddpm", steps=10, seed=s) for s in (3, 3, 4)]
    assert torch.equal(ddpm[0], ddpm[1]) and not torch.equal(ddpm[0], ddpm[2])
    assert trace.timesteps == inference_timesteps(T, 10)
    assert len(trace.images) == 11 and len(trace.estimates) == 10
    assert torch.equal(trace.images[-1], first)
    assert first.shape == (3, 1, 16, 16) and first.min() >= 0 and first.max() <= 1


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"digits": [10]}, ValueError, r"digits must be ints in \[0, 9\]"),
        ({"digits": [-1]}, ValueError, r"digits must be ints in \[0, 9\]"),
        ({"digits": [True]}, ValueError, "digits must be ints"),
        ({"digits": "7"}, TypeError, "digits must be a non-empty sequence"),
        ({"digits": []}, TypeError, "digits must be a non-empty sequence"),
        ({"steps": 0}, ValueError, r"steps must be an int in \[1, 200\]"),
        ({"steps": 201}, ValueError, r"steps must be an int in \[1, 200\]"),
        ({"steps": 2.5}, ValueError, "steps must be an int"),
        ({"guidance_scale": -1}, ValueError, "guidance_scale must be a number >= 0"),
        ({"guidance_scale": float("nan")}, ValueError, "guidance_scale must be a number >= 0"),
        ({"guidance_scale": "3"}, ValueError, "guidance_scale must be a number"),
        ({"sampler": "euler"}, ValueError, "sampler must be one of"),
        ({"seed": "0"}, TypeError, "seed must be an int"),
    ],
)
def test_bad_input_gets_a_clear_error(model, options, error, message):
    arguments = {"digits": [1], "steps": 2, **options}
    with pytest.raises(error, match=message):
        sample(model, arguments.pop("digits"), **arguments)


# --- the shipped weights ---------------------------------------------------------------------------


def test_the_shipped_weights_match_their_manifest(model):
    manifest = model.manifest
    assert model.prediction_type == manifest["model"].get("prediction_type", "epsilon") == "epsilon"
    assert set(manifest["sha256"]) == {"config.json", "diffusion_pytorch_model.safetensors"}
    training = manifest["training"]
    assert training["script"] == "scripts/train_digits_diffusion.py" and training["seed"] == 0
    size = sum(path.stat().st_size for path in shipped_folder().iterdir())
    assert size <= 10_000_000


def test_a_corrupt_or_missing_file_is_refused(tmp_path):
    folder = tmp_path / "weights"
    shutil.copytree(shipped_folder(), folder)
    weights = folder / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsProblem, match="does not match its checksum"):
        load_digits_model(folder)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="is missing"):
        load_digits_model(folder)
    with pytest.raises(FileNotFoundError, match="not a digits model folder"):
        load_digits_model(tmp_path)
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(WeightsProblem, match="not a digits model manifest"):
        load_digits_model(tmp_path)
    good = tmp_path / "good"
    shutil.copytree(shipped_folder(), good)
    manifest = json.loads((good / "manifest.json").read_text())
    manifest["model"]["prediction_type"] = "sample"
    (good / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(WeightsProblem, match="unknown prediction type"):
        load_digits_model(good)


# --- quality: measured here, not copied from the manifest ------------------------------------------


def test_the_grader_is_accurate_on_held_out_real_digits(classifier):
    assert classifier.accuracy >= 0.95


def test_guided_samples_show_the_digit_asked_for(model, classifier):
    guided = grade(model, classifier, per_digit=10, steps=25, guidance_scale=DEFAULT_GUIDANCE, seed=0)
    assert guided.accuracy >= 0.85, guided.per_digit
    unguided = grade(model, classifier, per_digit=10, steps=25, guidance_scale=0, seed=0)
    assert unguided.accuracy < guided.accuracy  # the label is what makes the difference
    assert unguided.diversity > guided.diversity  # and guidance pays for it in variety


def test_the_stored_sweeps_are_what_grade_measures(model, classifier):
    """The pages read scripts/grade_sweeps.py's data. Its cheapest point (3 s) is recomputed here; a
    guidance row would take 20 s, so that file is checked for agreement with its own verdicts."""
    data = ROOT / "examples" / "part-5" / "data"
    samplers = json.loads((data / "sampler_steps.json").read_text())
    row = next(r for r in samplers["rows"] if (r["sampler"], r["steps"]) == ("ddim", 5))
    fast = grade(model, classifier, per_digit=samplers["per_digit"], sampler="ddim", steps=5,
                 guidance_scale=samplers["guidance_scale"], seed=samplers["seed"])
    assert (row["accuracy"], row["diversity"]) == (round(fast.accuracy, 3), round(fast.diversity, 3))
    scales = json.loads((data / "guidance_scales.json").read_text())
    verdicts = torch.tensor(scales["verdicts_at_shipped_scale"])
    asked = torch.arange(10).repeat_interleave(scales["per_digit"])
    shipped = scales["rows"][str(int(scales["shipped_scale"]))]
    assert shipped["accuracy"] == round(float((verdicts == asked).float().mean()), 3)
    for digit, share in shipped["per_digit"].items():
        assert share == round(float((verdicts[asked == int(digit)] == int(digit)).float().mean()), 3)


def test_diversity_checks_its_input():
    with pytest.raises(ValueError, match="one label per image"):
        diversity(torch.zeros(3, 1, 16, 16), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="at least two images"):
        diversity(torch.zeros(2, 1, 16, 16), torch.tensor([1, 2]))


def test_the_training_script_writes_a_loadable_model(tmp_path):
    out = tmp_path / "digits"
    result = subprocess.run(
        [
            sys.executable, str(ROOT / "scripts" / "train_digits_diffusion.py"),
            "--epochs", "1", "--images", "256", "--evaluate-per-digit", "2", "--out", str(out),
            "--prediction-type", "v_prediction",
        ],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "chosen: epoch 1" in result.stdout
    trained = load_digits_model(out)
    assert trained.manifest["training"]["epochs"] == 1 and "256 images" in trained.manifest["training"]["data"]
    assert trained.prediction_type == "v_prediction"
    assert sample(trained, [5], steps=2).shape == (1, 1, 16, 16)


def test_weights_are_written_whole_or_not_at_all(tmp_path):
    from llmsforme.diffusion.weights import read_manifest, write_weights_folder

    out = tmp_path / "weights"
    write_weights_folder(out, lambda folder: (folder / "w.bin").write_bytes(b"first"), {"run": 1})
    manifest = read_manifest(out, "test", "-")
    assert manifest["run"] == 1 and set(manifest["sha256"]) == {"w.bin"}
    assert (out.stat().st_mode & 0o777, (out / "w.bin").stat().st_mode & 0o777) == (0o755, 0o644)

    def fails(folder):
        (folder / "w.bin").write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_weights_folder(out, fails, {"run": 2})
    assert (out / "w.bin").read_bytes() == b"first" and read_manifest(out, "test", "-")["run"] == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["weights"]  # no staging folder left

    write_weights_folder(out, lambda folder: (folder / "v.bin").write_bytes(b"second"), {"run": 3})
    assert sorted(path.name for path in out.iterdir()) == ["manifest.json", "v.bin"]  # replaced, not merged
    with pytest.raises(TypeError, match="save must be a function"):
        write_weights_folder(out, "v.bin", {})
    with pytest.raises(TypeError, match="manifest must be a dict"):
        write_weights_folder(out, lambda folder: None, [])
