"""The ``genlineage`` console script: ``genlineage verify`` (a verdict on one suspect) and
``genlineage shadows`` (the owner's shadow set that verify takes as its null)."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .config import OWNER_STATISTICS
from .errors import InputError

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"  # the named profiles (as config.PROFILE_DIR)
DEFAULT_PROFILE = "tiny"


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions and epilogs as written; every option that has a default ends its help with it.
    Options without one (None), flags (False) and repeatable options (an empty list) say in their
    own words what happens when they are left out."""

    def _get_help_string(self, action: argparse.Action) -> str:
        d = action.default
        if d is None or d is False or d is argparse.SUPPRESS or (isinstance(d, list) and not d):
            return action.help or ""
        return super()._get_help_string(action)


class _Unset(str):
    """A default the user did not type: ``--profile`` left out is ``_Unset("tiny")``, so the
    command can say which profile it chose for them (argparse keeps a default of type str as it is)."""


def _profile_notice(command: str, profile: str, what: str) -> None:
    """One line on stderr when --profile was left out: which profile is used and how to choose another."""
    if isinstance(profile, _Unset):
        names = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")))
        print(f"genlineage {command}: no --profile given: using the {profile} profile ({what}); choose another "
              f"with --profile NAME ({names}) or --profile path/to/your.yaml", file=sys.stderr)


# --- checks before the heavy imports ------------------------------------------------------------------
# Existence, type and range only, with pathlib alone: a typo is refused in well under a second,
# before torch and diffusers load. The library checks everything again (and much more) itself.

def _path(flag: str, value: str | None, fix: str, kind: str) -> str | None:
    """The refusal for a ``kind`` ("folder" or "file") given as ``flag`` that is missing or of the
    other kind; None when it is fine or was not given."""
    if value is None:
        return None
    path = Path(value)
    if not path.exists():
        return f"{flag} {value} does not exist; {fix}."
    if not (path.is_dir() if kind == "folder" else path.is_file()):
        return f"{flag} {value} is not a {kind}; {fix}."
    return None


def _folder(flag: str, value: str | None, fix: str) -> str | None:
    return _path(flag, value, fix, "folder")


def _file(flag: str, value: str | None, fix: str) -> str | None:
    return _path(flag, value, fix, "file")


def _model(flag: str, value: str, fix: str) -> str | None:
    """A model given by path (a pipeline folder or a LoRA shadow's folder): it must exist; the gate
    decides the rest."""
    return None if Path(value).exists() else f"{flag} {value} does not exist; {fix}."


def _out_folder(value: str, fix: str) -> str | None:
    """--out is a folder to create or reuse: refused when it, or the nearest of its parents that
    exists, is not a folder."""
    path = Path(value)
    if path.exists():
        return None if path.is_dir() else f"--out {value} is an existing file, not a folder; {fix}."
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                return f"--out {value}: {parent} is a file, so no folder can be made inside it; {fix}."
            return None
    return None


def _profile(value: str) -> str | None:
    names = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")))
    path = Path(value)
    if path.suffix in {".yaml", ".yml"}:
        return None if path.is_file() else (f"--profile {value}: the YAML file does not exist; pass an existing "
                                            f"profile file or a profile name ({names}).")
    if (PROFILE_DIR / f"{value}.yaml").is_file() and path.name == value:
        return None
    return f"--profile {value}: no such profile; choose one of {names}, or pass a YAML file path."


def _level(flag: str, value: float) -> str | None:
    """The profile's one range check of a target FPR, as a pre-check message (None: fine)."""
    from .config import check_level

    try:
        check_level(value, flag)
    except InputError as err:
        return str(err)
    return None


def _positive(flag: str, value: float | int | None, what: str) -> str | None:
    if value is None or (math.isfinite(value) and value > 0):
        return None
    return f"{flag} {value}: {what}."


def precheck_verify(args: argparse.Namespace) -> list[str]:
    """What is wrong with ``genlineage verify``'s arguments that a look at the file system shows
    (every folder and file given exists and is of its kind, --out can be a folder, the profile
    exists, the numbers lie in their ranges): one message per problem, naming the argument and the
    fix; empty when nothing is. Uses pathlib only: it runs before torch is imported."""
    problems = [
        _folder("--source", args.source, "pass the source model folder that StableDiffusionPipeline.save_pretrained "
                                         "wrote (it holds model_index.json)"),
        _folder("--keys", args.keys, "pass a key set folder (a previous verify's OUT/keys, or one written by "
                                     "KeySet.save), or select keys now with --key-data"),
        _folder("--key-data", args.key_data, "pass the source's training pairs: an image folder with metadata.jsonl"),
        _folder("--base", args.base, "pass the pipeline folder of the base the source was fine-tuned from"),
        _model("--suspect", args.suspect, "pass the suspect's diffusers pipeline folder (it holds model_index.json)")
        if args.suspect else None,
        _file("--suspect-lora", args.suspect_lora, "pass the LoRA's weights file (pytorch_lora_weights.safetensors)"),
        _folder("--suspect-base", args.suspect_base, "pass the pipeline folder the LoRA was trained on"),
        _folder("--controls", args.controls, "pass pairs of the source's domain it never trained on: an image folder "
                                             "with metadata.jsonl"),
    ]
    if args.suspect_callable and ":" in args.suspect_callable:
        where = args.suspect_callable.rsplit(":", 1)[0]
        if where.endswith(".py") and not Path(where).is_file():
            problems.append(f"--suspect-callable {args.suspect_callable}: the file {where} does not exist; write it as "
                            "path/to/file.py:function or module:function.")
    for flag, models in (("--innocent-shadow", args.innocent_shadow), ("--infringing-shadow", args.infringing_shadow)):
        problems += [_model(flag, m, "pass a shadow model's folder (as genlineage shadows wrote it)") for m in models]
    if args.target_fpr is not None:
        problems.append(_level("--target-fpr", args.target_fpr))
    problems += [_positive("--n-keys", args.n_keys, "ask for at least 1 key sample"),
                 _positive("--budget", args.budget, "the query budget must be a positive number of images"),
                 _positive("--delta0", args.delta0, "the distance threshold must be a positive number (e.g. 0.15)"),
                 _profile(args.profile),
                 _out_folder(args.out, "name a folder for the report (a new one, or one a previous verify wrote), "
                                       "e.g. --out verify_report")]
    return [p for p in problems if p]


def _parse_rhos(text: str) -> list[float] | None:
    try:
        return [float(r) for r in text.split(",") if r.strip()]
    except ValueError:
        return None


def precheck_shadows(args: argparse.Namespace) -> list[str]:
    """``genlineage shadows``' counterpart of :func:`precheck_verify` (pathlib only)."""
    problems = [
        _folder("--base", args.base, "pass your copy of the suspect's base as a pipeline folder (it holds "
                                     "model_index.json)"),
        _folder("--data", args.data, "pass real pairs of the source's domain: an image folder with metadata.jsonl"),
        _folder("--source-data", args.source_data, "pass the source's training pairs: an image folder with "
                                                   "metadata.jsonl"),
        _folder("--source", args.source, "pass the source model folder that StableDiffusionPipeline.save_pretrained "
                                         "wrote (it holds model_index.json)"),
    ]
    rhos = _parse_rhos(args.rhos)
    if rhos is None:
        problems.append(f"--rhos {args.rhos!r}: write numbers separated by commas, e.g. 0.5,1.")
    elif any(not 0 < r <= 1 for r in rhos):
        problems.append(f"--rhos {args.rhos}: each share of generated pairs must lie in (0, 1], e.g. 0.5,1.")
    if args.innocent < 0 or args.infringing < 0 or args.innocent + args.infringing == 0:
        problems.append(f"--innocent {args.innocent} --infringing {args.infringing}: ask for at least one shadow, "
                        "and no negative count.")
    problems += [_positive("--n-samples", args.n_samples, "each shadow needs at least 1 training pair"),
                 _positive("--lora-rank", args.lora_rank, "the LoRA rank must be a positive integer"),
                 _profile(args.profile),
                 _out_folder(args.out, "name a folder for the shadow set (a new one, or one a previous "
                                       "genlineage shadows wrote)")]
    return [p for p in problems if p]


def _refuse(command: str, problems: list[str]) -> int:
    for problem in problems:
        print(f"genlineage {command}: {problem}", file=sys.stderr)
    return 2


VERIFY_DESCRIPTION = """\
Decide whether SUSPECT was fine-tuned on images generated by SOURCE, at a false-positive rate you
choose, without any watermark injected beforehand (Zhang et al., arXiv 2409.15781).

The suspect is queried with the captions of the source's key samples (training pairs the source
memorised) under a few fixed query seeds; the reconstruction distance of each key is the closest
of those generations to the key's reference image. The references are made with other seeds (the
profile's attribution.key_seeds, recorded in the key set): a --keys set made with a query seed is
refused, since a suspect asked at a reference's own seed would share its initial noise. A key is a hit
when its distance is below delta0; conf is the share of hits. The p-value compares the suspect with an innocent null:

  with 2+ --innocent-shadow models  the suspect's mean distance over the keys against your innocent
                                    shadows' (Student-t prediction: their spread assumed normal);
                                    too few or too spread shadows are refused before any query
  with --controls only              the suspect's own hits on pairs the source never trained on,
                                    one-sided Fisher exact test (a fallback: it assumes keys are no
                                    easier than controls for innocent models, which failed on tiny
                                    models; its infringing verdicts carry a warning)

The null's unit is the model: innocent models differ in how close they come to every key, so a
per-key count from the shadows would call far too many innocent models infringing.

The verdict is "infringing" when p <= --target-fpr, else "not shown". With infringing shadows as
well, delta0 is calibrated on the shadows and a discriminator (sorted distances + conf) scores the
suspect too.
"""

VERIFY_EPILOG = """\
output (in --out):
  report.html       the verdict, a plain-language summary, key samples beside the suspect's best
                    reconstructions, the distance histogram against the null, the settings (one
                    page, every image embedded: open it in a browser)
  report.md         the same for a markdown viewer
  verdict.json      the same for machines
  keys/             the key samples selected (with --key-data); reuse them with --keys
  cache/            every image generated (a re-run asks the suspect nothing twice)

safety:
  The suspect is untrusted input. Only .safetensors weights are loaded; pickle weights, links that
  leave the model folder and configs that name remote code are refused. Nothing is written inside
  the suspect's folder. --out must be new, empty or an earlier verify's output, apart from every
  input; the results are moved into it only when the run succeeds.

exit status:
  0  a verdict was reached (either verdict; read verdict.json)
  2  bad input or usage (the message names the input and the fix)

examples:
  # keys already selected, innocent shadows as the null (the more, the better: 19 give an
  # assumption-free test at 0.05)
  genlineage verify --source models/v1_celeba --keys owner/keys --suspect suspect_model \\
      --innocent-shadow shadows/inn1 --innocent-shadow shadows/inn2 --innocent-shadow shadows/inn3 \\
      --innocent-shadow shadows/inn4 --target-fpr 0.05 --out report

  # select 30 keys now (Strategy 2, relative to the base), control samples as the null
  genlineage verify --source models/v1_celeba --key-data data/celeba_source --strategy generation \\
      --base models/base_v1 --n-keys 30 --controls data/celeba_heldout --suspect suspect_model

  # a LoRA fine-tune (diffusers' pytorch_lora_weights.safetensors) of a public base
  genlineage verify --source models/v1_celeba --keys owner/keys --suspect-lora lora/pytorch_lora_weights.safetensors \\
      --suspect-base models/sd-v1-5 --innocent-shadow shadows/innocent_00 --innocent-shadow shadows/innocent_01

  # a remote API: a Python function generate(prompt, seed) -> PIL image
  genlineage verify --source models/v1_celeba --keys owner/keys --controls data/celeba_heldout \\
      --suspect-callable my_api.py:generate --budget 400
"""


def _verify_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("verify", help="give one suspicious model a calibrated verdict",
                       description=VERIFY_DESCRIPTION, epilog=VERIFY_EPILOG,
                       formatter_class=_HelpFormatter)
    src = p.add_argument_group("source and key samples")
    src.add_argument("--source", required=True, metavar="DIR", help="the owner's model: a diffusers pipeline folder")
    src.add_argument("--keys", metavar="DIR", help="a saved key set (image folder + _keys.json from KeySet.save)")
    src.add_argument("--key-data", metavar="DIR",
                     help="or: the source's training pairs (image folder with metadata.jsonl) to select keys from")
    src.add_argument("--strategy", default="generation", choices=["generation", "detection", "random"],
                     help="key selection with --key-data: generation (Strategy 2), detection (Strategy 1), random")
    src.add_argument("--base", metavar="DIR", help="the base the source was tuned from (Strategy 2 scores keys relative to it)")
    src.add_argument("--n-keys", type=int, metavar="N",
                     help="key samples to use (default: every saved key with --keys; the profile's number with --key-data)")
    sus = p.add_argument_group("suspect (one of)")
    sus.add_argument("--suspect", metavar="DIR", help="the suspect: a diffusers Stable-Diffusion pipeline folder")
    sus.add_argument("--suspect-lora", metavar="FILE",
                     help="or a LoRA fine-tune: its pytorch_lora_weights.safetensors (diffusers' format), with --suspect-base")
    sus.add_argument("--suspect-base", metavar="DIR",
                     help="the pipeline folder the --suspect-lora was trained on (e.g. SD-v1.5)")
    sus.add_argument("--suspect-callable", metavar="MODULE:FUNC",
                     help="or a function generate(prompt, seed) -> image, as module:function or file.py:function. This "
                          "imports and runs the named Python code with your user's rights; use only code you trust")
    nul = p.add_argument_group("the innocent null (2+ innocent shadows, or controls)")
    nul.add_argument("--innocent-shadow", action="append", default=[], metavar="DIR",
                     help="an innocent shadow model you fine-tuned on data the source never generated (repeatable; "
                          "at least 2; with ceil(1/A) - 1 or more their rank alone supports an infringing verdict, "
                          "with no warning)")
    nul.add_argument("--infringing-shadow", action="append", default=[], metavar="DIR",
                     help="an infringing shadow model (repeatable): calibrates delta0, enables the discriminator")
    nul.add_argument("--controls", metavar="DIR",
                     help="pairs of the source's domain it never trained on (image folder); the null when fewer than 2 "
                          "innocent shadows are given")
    nul.add_argument("--allow-mismatched-null", action="store_true",
                     help="accept innocent shadows made from another base or by another method (full/LoRA) than the "
                          "suspect (refused by default: such a null misstates the false-positive rate); the report says so")
    dec = p.add_argument_group("decision")
    dec.add_argument("--target-fpr", type=float, metavar="A",
                     help="false-positive rate, in (0, 1) (default: the profile's verify.target_fpr, 0.05 for tiny)")
    dec.add_argument("--statistic", metavar="NAME", choices=list(OWNER_STATISTICS),
                     help="what the innocent shadows' null compares: " + ", ".join(OWNER_STATISTICS) +
                          " (default: the profile's verify.statistic; key_control_contrast needs --controls; "
                          "docs/method.md says what each measures)")
    dec.add_argument("--budget", type=int, metavar="Q",
                     help="most images to ask of the suspect (default: no cap; refused if too small for A)")
    dec.add_argument("--delta0", type=float, help="distance threshold (default: calibrated on shadows, else the profile's)")
    dec.add_argument("--profile", default=_Unset(DEFAULT_PROFILE), metavar="NAME|YAML",
                     help="settings: key and query seeds, sampler, distance, delta0; a profile name (tiny: the artifact's "
                          "CPU models; paper, paper_full: SD-v1.5/2.1; smoke: the tests) or a YAML path")
    p.add_argument("--out", default="verify_report", metavar="DIR",
                   help="report folder: a new or empty folder, or one an earlier verify wrote (a re-run reuses its "
                        "cache); never inside an input, nor holding one. Written only when the run succeeds")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


SHADOWS_DESCRIPTION = """\
Build the model owner's shadow models in one command: innocent shadows (a base fine-tuned on real
pairs of your domain that the source never trained on) and, optionally, infringing ones (a share
rho of the pairs replaced by the source's generations from their captions). Full fine-tunes or LoRA
(--finetune lora), seeded, cached and resumable: a re-run trains only what is missing. The output
plugs into `genlineage verify --innocent-shadow/--infringing-shadow` as it is; the command prints
those flags. A test at false-positive rate A that assumes nothing needs ceil(1/A) - 1 innocent
shadows (19 at 0.05); fewer work, with the Student-t null verify states.
"""

SHADOWS_EPILOG = """\
output (in --out):
  shadows.json      the manifest: every shadow with role, label, rho, seed, folder, base and method
                    (full/lora): verify checks them against the suspect's
  <name>/           each shadow (a pipeline folder, or a LoRA folder on --base)
  data/<name>/      each shadow's training pairs; cache/ the source's generations; work/ checkpoints

example:
  genlineage shadows --base models/sd-v1-5 --source models/v1_celeba --data owner/celeba_unseen \\
      --source-data owner/celeba_train --innocent 19 --infringing 4 --rhos 0.5,1 --finetune lora --out shadows
"""


def _shadows_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("shadows", help="build the owner's innocent (and infringing) shadow models",
                       description=SHADOWS_DESCRIPTION, epilog=SHADOWS_EPILOG,
                       formatter_class=_HelpFormatter)
    p.add_argument("--base", required=True, metavar="DIR",
                   help="the base to fine-tune: your own copy of the suspect's base (e.g. SD-v1.5; trusted as yours)")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="real pairs of the source's domain (image folder with metadata.jsonl) it never trained on")
    p.add_argument("--source-data", required=True, metavar="DIR",
                   help="the source's training pairs: --data may not share an image with them")
    p.add_argument("--source", metavar="DIR", help="the owner's model, whose generations infringing shadows train on")
    p.add_argument("--innocent", type=int, default=4, metavar="N", help="innocent shadows")
    p.add_argument("--infringing", type=int, default=0, metavar="N", help="infringing shadows (needs --source)")
    p.add_argument("--rhos", default="1", metavar="R,R",
                   help="shares of generated pairs, each in (0, 1], cycled over infringing shadows")
    p.add_argument("--n-samples", type=int, metavar="N", help="pairs per shadow (default: the profile's suspicious.n_samples)")
    p.add_argument("--finetune", choices=["full", "lora"], help="full fine-tunes or LoRA (default: the profile's)")
    p.add_argument("--lora-rank", type=int, metavar="R", help="LoRA rank (default: the profile's)")
    p.add_argument("--seed", type=int, default=0, help="master seed: each shadow's seed derives from it and its name")
    p.add_argument("--profile", default=_Unset(DEFAULT_PROFILE), metavar="NAME|YAML",
                   help="training and generation settings; a profile name (tiny: the artifact's CPU models; paper, "
                        "paper_full: SD-v1.5/2.1; smoke: the tests) or a YAML path")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="the shadow set's folder: a new or empty folder, or one an earlier genlineage shadows wrote "
                        "(a re-run trains only what is missing); never inside an input, nor holding one")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _run_shadows(args) -> int:
    problems = precheck_shadows(args)
    if problems:
        return _refuse("shadows", problems)
    _profile_notice("shadows", args.profile, "its training and generation settings")
    from .verify.shadows import build_shadows, verify_arguments  # torch and diffusers load here

    rhos = _parse_rhos(args.rhos)
    try:
        table = build_shadows(args.base, args.data, args.source_data, args.out, source=args.source,
                              innocent=args.innocent, infringing=args.infringing, rhos=rhos, n_samples=args.n_samples,
                              finetune=args.finetune, lora_rank=args.lora_rank, seed=args.seed, profile=str(args.profile),
                              progress=not args.quiet)
    except InputError as err:
        print(f"genlineage shadows: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"shadows": len(table), "manifest": str(Path(args.out) / "shadows.json"),
                      "verify_arguments": " ".join(verify_arguments(args.out, table))}, indent=2))
    return 0


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``genlineage`` parser and its commands' parsers, by name."""
    parser = argparse.ArgumentParser(prog="genlineage", description="Training-data attribution for text-to-image diffusion.")
    sub = parser.add_subparsers(dest="command", required=True)
    return parser, {"verify": _verify_parser(sub), "shadows": _shadows_parser(sub)}


def main(argv: list[str] | None = None) -> int:
    parser, commands = build_parser()
    verify_parser = commands["verify"]
    args = parser.parse_args(argv)
    if args.command == "shadows":
        return _run_shadows(args)
    if args.command == "verify":
        if sum(map(bool, (args.suspect, args.suspect_lora, args.suspect_callable))) != 1:
            verify_parser.error("give exactly one of --suspect DIR, --suspect-lora FILE (with --suspect-base DIR) "
                                "or --suspect-callable MODULE:FUNC")
        if bool(args.suspect_lora) != bool(args.suspect_base):
            verify_parser.error("--suspect-lora FILE and --suspect-base DIR go together: a LoRA file is a model only "
                                "on the base it was trained on")
        if bool(args.keys) == bool(args.key_data):
            verify_parser.error("give exactly one of --keys DIR or --key-data DIR")
        problems = precheck_verify(args)
        if problems:
            return _refuse("verify", problems)
        _profile_notice("verify", args.profile, "its key and query seeds, sampler, distance and delta0")
        from .models.lora import LoraModel  # torch and diffusers load here
        from .verify import verify, write_report
        from .verify.suspect import load_callable

        try:
            if args.suspect_callable:
                suspect, name = load_callable(args.suspect_callable)
            else:
                suspect, name = args.suspect or LoraModel(Path(args.suspect_lora), Path(args.suspect_base)), None
            verdict = verify(args.source, suspect, keys=args.keys, key_data=args.key_data, strategy=args.strategy,
                             base=args.base, innocent_shadows=args.innocent_shadow,
                             infringing_shadows=args.infringing_shadow, controls=args.controls,
                             target_fpr=args.target_fpr, budget=args.budget, n_keys=args.n_keys, delta0=args.delta0,
                             profile=str(args.profile), out=args.out, progress=not args.quiet, suspect_name=name,
                             allow_mismatched_null=args.allow_mismatched_null, statistic=args.statistic)
            write_report(verdict, args.out)
        except InputError as err:
            print(f"genlineage verify: {err}", file=sys.stderr)
            return 2
        if verdict.warning:
            print(f"genlineage verify: warning: {verdict.warning}", file=sys.stderr)
        # the report a person opens (report.md and verdict.json lie beside it)
        print(json.dumps({"verdict": verdict.verdict, "p_value": verdict.p_value, "conf": verdict.conf,
                          "discriminator_score": verdict.discriminator_score, "queries": verdict.queries,
                          "report": str(Path(args.out) / "report.html")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
