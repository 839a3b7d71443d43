"""The ``genlineage`` commands' surface, with no model: every default in ``--help``, the profile
said when it is left out, typos refused before torch loads, the report named last; and the
artifact's licence and citation files."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import yaml

from genlineage.cli import build_parser, main, precheck_shadows, precheck_verify

REPO = Path(__file__).resolve().parents[1]


def _has_default(action: argparse.Action) -> bool:
    d = action.default
    return not (d is None or d is False or d is argparse.SUPPRESS or (isinstance(d, list) and not d))


def _flat(text: str) -> str:
    return " ".join(text.split())


# --- --help shows every default -----------------------------------------------------------------------

@pytest.mark.parametrize("command", ["verify", "shadows"])
def test_help_shows_the_default_of_every_option_that_has_one(command):
    sub = build_parser()[1][command]
    text = _flat(sub.format_help())
    with_default = [a for a in sub._actions if _has_default(a)]
    expected = {"verify": {"--strategy", "--profile", "--out"},  # --target-fpr and --statistic: the profile's
                "shadows": {"--innocent", "--infringing", "--rhos", "--seed", "--profile"}}[command]
    assert {a.option_strings[0] for a in with_default} == expected
    for action in with_default:
        own = _flat(sub._get_formatter()._expand_help(action))  # this option's help as --help prints it
        assert own.endswith(f"(default: {action.default})"), (action.option_strings, own)
        assert own in text, action.option_strings
    if command == "verify":  # one home for the owner's level: the profile's verify.target_fpr
        assert "(default: the profile's verify.target_fpr, 0.05 for tiny)" in text
    profile = next(a for a in sub._actions if "--profile" in a.option_strings)
    assert profile.default == "tiny" and "(default: tiny)" in text


def test_help_warns_that_a_suspect_callable_runs_code_and_keeps_the_man_page(capsys):
    with pytest.raises(SystemExit) as info:
        main(["verify", "--help"])
    assert info.value.code == 0
    text = _flat(capsys.readouterr().out)
    assert "imports and runs the named Python code with your user's rights; use only code you trust" in text
    for section in ("exit status:", "safety:", "examples:", "report.html"):
        assert section in text


# --- refusals before the heavy imports ----------------------------------------------------------------

def _verify_args(tmp_path: Path, **change: str) -> list[str]:
    """Arguments whose folders all exist (a pre-check passes) unless ``change`` says otherwise."""
    for name in ("source", "keys", "suspect", "inn0", "inn1"):
        (tmp_path / name).mkdir(exist_ok=True)
    given = {"--source": str(tmp_path / "source"), "--keys": str(tmp_path / "keys"),
             "--suspect": str(tmp_path / "suspect"), "--out": str(tmp_path / "report"), "--target-fpr": "0.05"}
    given.update({f"--{k.replace('_', '-')}": v for k, v in change.items()})
    args = ["verify"] + [x for flag, value in given.items() for x in (flag, value)]
    return args + ["--innocent-shadow", str(tmp_path / "inn0"), "--innocent-shadow", str(tmp_path / "inn1")]


def _namespace(argv: list[str]) -> argparse.Namespace:
    return build_parser()[0].parse_args(argv)


def test_a_missing_source_folder_exits_2_naming_source_and_the_fix(tmp_path, capsys):
    assert main(_verify_args(tmp_path, source=str(tmp_path / "nope"))) == 2
    err = capsys.readouterr().err
    assert f"--source {tmp_path / 'nope'} does not exist" in err and "model_index.json" in err
    assert not (tmp_path / "report").exists(), "a refusal writes nothing"


@pytest.mark.parametrize("fpr", ["1.5", "0", "1", "-0.1", "nan"])
def test_a_target_fpr_outside_zero_one_exits_2(tmp_path, capsys, fpr):
    assert main(_verify_args(tmp_path, target_fpr=fpr)) == 2
    assert f"--target-fpr {float(fpr)}: the target FPR must lie strictly between 0 and 1" in capsys.readouterr().err


@pytest.mark.parametrize("change, expect", [
    ({"keys": "{tmp}/no_keys"}, "--keys {tmp}/no_keys does not exist"),
    ({"keys": "{tmp}/file"}, "--keys {tmp}/file is not a folder"),
    ({"suspect": "{tmp}/no_suspect"}, "--suspect {tmp}/no_suspect does not exist"),
    ({"out": "{tmp}/file"}, "--out {tmp}/file is an existing file, not a folder"),
    ({"out": "{tmp}/file/report"}, "--out {tmp}/file/report: {tmp}/file is a file"),
    ({"profile": "tinny"}, "--profile tinny: no such profile; choose one of"),
    ({"profile": "{tmp}/mine.yaml"}, "--profile {tmp}/mine.yaml: the YAML file does not exist"),
    ({"n_keys": "0"}, "--n-keys 0: ask for at least 1 key sample"),
    ({"budget": "0"}, "--budget 0: the query budget must be a positive number"),
    ({"delta0": "-1"}, "--delta0 -1.0: the distance threshold must be a positive number"),
    ({"controls": "{tmp}/no_controls"}, "--controls {tmp}/no_controls does not exist"),
])
def test_each_argument_is_checked_by_the_pre_check(tmp_path, capsys, change, expect):
    (tmp_path / "file").write_text("not a folder")
    change = {k: v.format(tmp=tmp_path) for k, v in change.items()}
    assert main(_verify_args(tmp_path, **change)) == 2
    err = capsys.readouterr().err
    assert err.startswith("genlineage verify: ") and expect.format(tmp=tmp_path) in err, err


def test_every_problem_is_named_at_once(tmp_path):
    args = _namespace(_verify_args(tmp_path, source=str(tmp_path / "a"), keys=str(tmp_path / "b"), target_fpr="2"))
    problems = precheck_verify(args)
    assert [p.split()[0] for p in problems] == ["--source", "--keys", "--target-fpr"]
    assert precheck_verify(_namespace(_verify_args(tmp_path))) == [], "existing folders and sane numbers pass"


def test_a_suspect_callable_file_must_exist_and_a_lora_must_be_a_file(tmp_path):
    args = _verify_args(tmp_path)
    i = args.index("--suspect")
    callable_args = args[:i] + ["--suspect-callable", f"{tmp_path / 'api.py'}:generate"] + args[i + 2:]
    assert precheck_verify(_namespace(callable_args)) == [
        f"--suspect-callable {tmp_path / 'api.py'}:generate: the file {tmp_path / 'api.py'} does not exist; write it "
        "as path/to/file.py:function or module:function."]
    lora_args = (args[:i] + ["--suspect-lora", str(tmp_path / "suspect"), "--suspect-base", str(tmp_path / "source")]
                 + args[i + 2:])
    assert precheck_verify(_namespace(lora_args)) == [
        f"--suspect-lora {tmp_path / 'suspect'} is not a file; pass the LoRA's weights file "
        "(pytorch_lora_weights.safetensors)."]


def test_shadows_pre_check(tmp_path, capsys):
    for name in ("base", "data", "source_data"):
        (tmp_path / name).mkdir()
    base = ["shadows", "--base", str(tmp_path / "base"), "--data", str(tmp_path / "data"),
            "--source-data", str(tmp_path / "source_data"), "--out", str(tmp_path / "set")]
    assert precheck_shadows(_namespace(base)) == []
    assert main(base + ["--rhos", "0.5,x"]) == 2
    assert "--rhos '0.5,x': write numbers separated by commas" in capsys.readouterr().err
    assert main(base + ["--rhos", "0,1.5"]) == 2
    assert "must lie in (0, 1]" in capsys.readouterr().err
    missing = base[:]
    missing[missing.index("--data") + 1] = str(tmp_path / "nope")
    assert main(missing) == 2
    assert f"genlineage shadows: --data {tmp_path / 'nope'} does not exist" in capsys.readouterr().err


def test_the_pre_check_refuses_without_importing_torch(tmp_path):
    """Run as the installed command runs: a fresh interpreter; a refused typo never loads torch or diffusers."""
    code = textwrap.dedent(f"""
        import sys, time
        t = time.perf_counter()
        from genlineage.cli import main
        rc = main(["verify", "--source", {str(tmp_path / 'nonexistent')!r}, "--keys", {str(tmp_path)!r},
                   "--suspect", {str(tmp_path)!r}, "--controls", {str(tmp_path)!r}, "--target-fpr", "1.5"])
        print(rc, "torch" in sys.modules, "diffusers" in sys.modules, time.perf_counter() - t)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    rc, torch_loaded, diffusers_loaded, seconds = result.stdout.split()
    assert (rc, torch_loaded, diffusers_loaded) == ("2", "False", "False"), result.stderr
    assert "--source" in result.stderr and "--target-fpr" in result.stderr
    assert float(seconds) < 10, "a refusal costs no heavy import (under a second unloaded; generous for a busy machine)"


# --- the profile said, the report named -------------------------------------------------------------

def _fake_library(monkeypatch, tmp_path: Path) -> list[dict]:
    """Stand-ins for the modules main imports after its pre-check (no torch, no model)."""
    calls: list[dict] = []
    verdict = types.SimpleNamespace(verdict="not shown", p_value=0.5, conf=0.1, discriminator_score=None, queries=8,
                                    warning=None)

    def verify(*args, **kwargs):
        calls.append(kwargs)
        return verdict

    def build_shadows(*args, **kwargs):
        calls.append(kwargs)
        return []

    fakes = {"genlineage.models.lora": {"LoraModel": object},
             "genlineage.verify": {"verify": verify, "write_report": lambda v, out: None},
             "genlineage.verify.suspect": {"load_callable": None},
             "genlineage.verify.shadows": {"build_shadows": build_shadows, "verify_arguments": lambda out, t: []}}
    for name, attrs in fakes.items():
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attrs))
    return calls


def test_a_left_out_profile_is_said_on_one_line_and_a_given_one_is_not(tmp_path, capsys, monkeypatch):
    calls = _fake_library(monkeypatch, tmp_path)
    assert main(_verify_args(tmp_path)) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "--profile" in line]
    assert len(said) == 1 and "no --profile given: using the tiny profile" in said[0] and "--profile NAME (" in said[0]
    assert calls[-1]["profile"] == "tiny" and type(calls[-1]["profile"]) is str
    assert main(_verify_args(tmp_path, profile="smoke")) == 0
    assert "--profile" not in capsys.readouterr().err and calls[-1]["profile"] == "smoke"
    for name in ("base", "data", "source_data"):
        (tmp_path / name).mkdir()
    shadows = ["shadows", "--base", str(tmp_path / "base"), "--data", str(tmp_path / "data"),
               "--source-data", str(tmp_path / "source_data"), "--out", str(tmp_path / "set")]
    assert main(shadows) == 0
    assert "genlineage shadows: no --profile given: using the tiny profile" in capsys.readouterr().err


def test_the_last_thing_printed_names_report_html(tmp_path, capsys, monkeypatch):
    _fake_library(monkeypatch, tmp_path)
    assert main(_verify_args(tmp_path, profile="smoke")) == 0
    out = capsys.readouterr().out
    printed = json.loads(out)
    assert list(printed)[-1] == "report" and printed["report"] == str(tmp_path / "report" / "report.html")
    last_line = [line for line in out.splitlines() if line.strip() not in ("", "}")][-1]
    assert "report.html" in last_line


# --- licence and citation ---------------------------------------------------------------------------

def test_the_licence_file_is_the_licence_pyproject_names():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n                           Version 2.0, January 2004")
    for clause in ("1. Definitions.", "3. Grant of Patent License.", "9. Accepting Warranty or Additional Liability.",
                   "END OF TERMS AND CONDITIONS", "Copyright 2026 the genlineage authors"):
        assert clause in text, clause
    assert "[yyyy]" not in text and len(text.splitlines()) > 190, "the whole text, its copyright line filled in"


def test_citation_cff_parses_and_cites_the_paper():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["title"].startswith("genlineage:") and cff["authors"]
    assert cff["license"] == "Apache-2.0"
    papers = [r for r in cff["references"]
              if "2409.15781" in json.dumps([r.get("url"), r.get("identifiers")])]
    assert len(papers) == 1
    paper = papers[0]
    assert paper["type"] == "article" and paper["year"] == 2024 and paper["title"].startswith("Training Data Attribution")
    readme = (REPO / "README.md").read_text()
    assert "@article{zhang2024training," in readme and "journal={arXiv preprint arXiv:2409.15781}" in readme
    assert "CITATION.cff" in readme and "## Licence" in readme
