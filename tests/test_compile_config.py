"""mirror compile: configuration and bad input give one clear line, never a traceback."""

from __future__ import annotations

import pytest

from mirror import MirrorError
from mirror.compiler import cli
from mirror.compiler.config import load_config


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    err = capsys.readouterr().err
    return code, err


def test_defaults():
    config = load_config()
    assert [g.name for g in config.graphs] == ["warp", "gen", "parser"]
    assert config.targets == ["tflite", "coreml", "onnx"]
    assert config.precisions == ["fp32", "fp16", "int8"]
    assert str(config.out) == "build"
    assert config.graphs[0].pipeline == "divton-warp" and config.graphs[1].pipeline == "default"


def test_toml_then_overrides(tmp_path):
    path = tmp_path / "mirror.toml"
    path.write_text(
        'out = "dist"\ngraphs = ["gen"]\nprecisions = ["fp16"]\n'
        '[graph.gen]\ncheckpoint = "g.pth"\nsize = [128, 96]\n'
    )
    config = load_config(path, precisions=["fp32", "int8"])
    assert str(config.out) == "dist"
    assert config.precisions == ["fp32", "int8"]
    (gen,) = config.graphs
    assert gen.size == (128, 96) and str(gen.checkpoint) == "g.pth"


def test_precision_names_are_the_recipes_and_their_aliases():
    """Every recipe of mirror/precisions.py and every alias is a valid choice, kept as asked."""
    asked = ["int8-full", "int8-static", "palettize6", "float16", "int8-weight"]
    assert load_config(precisions=asked).precisions == asked
    with pytest.raises(MirrorError, match="unknown precision 'int3'"):
        load_config(precisions=["fp16", "int3"])


@pytest.mark.parametrize(
    "text,match",
    [
        ("targets = ['tflite', 'tensorrt']", "unknown target 'tensorrt'"),
        ("graphs = ['warper']", "unknown graph 'warper'"),
        ("colour = 'red'", "unknown keys \\['colour'\\]"),
        ("[graph.warp]\nsize = [250, 190]", "multiples of 32"),
        ("[graph.warp]\nweights = 'x'", "unknown keys \\['weights'\\]"),
        ("graphs = [", "not valid TOML"),
        # Typos and wrong types that would otherwise compile something else with exit 0.
        ("[graph.wrap]\nsize = [256, 192]", "\\[graph.wrap\\] is not a graph"),
        ('baseline = "false"', "baseline must be true or false; got 'false'"),
        ('graphs = "gen"', "graphs must be a list of names"),
        ('precisions = "fp16"', "precisions must be a list of names"),
        ("graphs = []", "no graphs selected"),
        ('seed = "zero"', "seed must be a whole number >= 0; got 'zero'"),
        ("seed = -1", "seed must be a whole number"),
        ("[graph.warp]\nsize = 256", "size must be \\[H, W\\]"),
        ("graph = 3", "graph settings go in tables"),
        ("[graph.warp]\noptions = 'fast'", "options must be a table"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path, text, match):
    path = tmp_path / "mirror.toml"
    path.write_text(text + "\n")
    with pytest.raises(MirrorError, match=match):
        load_config(path)


def test_cli_bad_target_exits_1_with_one_line(capsys, tmp_path):
    code, err = run_cli(capsys, "compile", "--targets", "tflite,tensorrt", "--out", str(tmp_path / "b"))
    assert code == 1
    assert err.strip().count("\n") == 0
    assert err.startswith("mirror: error: unknown target 'tensorrt'")
    assert "Traceback" not in err


def test_cli_missing_config_file(capsys, tmp_path):
    code, err = run_cli(capsys, "compile", "--config", str(tmp_path / "nope.toml"))
    assert code == 1 and "does not exist" in err


def test_cli_bad_checkpoint_flag(capsys):
    code, err = run_cli(capsys, "compile", "--checkpoint", "warp.pth")
    assert code == 1 and "GRAPH=PATH" in err


def test_cli_checkpoint_that_is_not_one_leaves_no_build(capsys, tmp_path):
    bogus = tmp_path / "warp.pth"
    bogus.write_text("not weights")
    out = tmp_path / "build"
    code, err = run_cli(capsys, "compile", "--graphs", "gen", "--checkpoint", f"gen={bogus}", "--out", str(out))
    assert code == 1
    assert "is not a PyTorch checkpoint" in err
    assert not (out / "report.json").exists()
    assert not any(p.is_file() for p in out.rglob("*")) if out.exists() else True


def test_cli_bad_model_reference(capsys, tmp_path):
    out = tmp_path / "b"
    code, err = run_cli(capsys, "compile", "--model", "no_such_package.models:make", "--out", str(out))
    assert code == 1 and "cannot import 'no_such_package.models'" in err
    assert not out.exists()  # nothing is made for a model that does not load
    code, err = run_cli(capsys, "compile", "--model", "just_a_name")
    assert code == 1 and "package.module:factory" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--checkpoint", "foo=gen.pth"], "unknown graph 'foo'"),
        (["--graphs", "gen", "--checkpoint", "warp=w.pth"], "warp is not compiled (graphs: gen)"),
        (["--graphs", ""], "no graphs selected"),
        (["--targets", ""], "no targets selected"),
        (["--model", "user_models:flow_warp", "--checkpoint", "gen=g.pth"], "--model brings its own weights"),
    ],
)
def test_cli_selections_that_would_be_ignored_are_errors(capsys, tmp_path, argv, message):
    out = tmp_path / "b"
    code, err = run_cli(capsys, "compile", "--out", str(out), *argv)
    assert code == 1 and message in err and err.count("\n") == 1, err
    assert not out.exists()  # stopped before building anything


def test_cli_out_naming_a_file(capsys, tmp_path):
    f = tmp_path / "build"
    f.write_text("not a folder")
    code, err = run_cli(capsys, "compile", "--out", str(f))
    assert code == 1 and "is a file; name a folder" in err


def test_cli_config_that_is_a_folder_or_binary(capsys, tmp_path):
    code, err = run_cli(capsys, "compile", "--config", str(tmp_path))
    assert code == 1 and "is a folder" in err
    binary = tmp_path / "mirror.toml"
    binary.write_bytes(bytes(range(256)))
    code, err = run_cli(capsys, "compile", "--config", str(binary))
    assert code == 1 and "is not text" in err
