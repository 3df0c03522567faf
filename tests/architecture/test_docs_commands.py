"""The docs are executed (issue 39, item 2): every shell command in the code blocks of README.md, docs/GUIDE.md,
docs/BYO_VAE.md and docs/SECURITY.md (and the inline commands of the README's tables), the latent_ndm commands of the
Makefile targets they name, and their Python snippets, checked against the reviewed table tests/docs_commands.yaml.
An entry either runs the command (`run:`, shrunk by the overrides it lists, in a scratch folder) or composes it with
the command's own parser (`compose:`, with the reason it is not run). A documented command without an entry fails,
and so does an entry whose command left the docs."""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from latent_ndm.runs.validate import compose_command_line

REPO = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "docs/GUIDE.md", "docs/BYO_VAE.md", "docs/SECURITY.md")
TABLE = REPO / "tests" / "docs_commands.yaml"
SHELL_BLOCKS = ("bash", "sh", "console", "")
COMMAND_PREFIXES = ("python ", "make ", "torchrun ", "srun ", "pip ", "$ ")
HYDRA_COMMANDS = ("train", "sample", "evaluate", "benchmark", "encode", "fid_stats", "export_vae")
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


@dataclass(frozen=True)
class Documented:
    """A command or Python snippet of the docs: its normalised text and where it is."""

    text: str
    where: str


def normalise(text: str) -> str:
    return " ".join(text.split())


def without_comment(line: str) -> str:
    """A shell line without its trailing `# comment` (a # after whitespace, outside quotes)."""
    quote = None
    for i, char in enumerate(line):
        if char in "'\"" and quote in (None, char):
            quote = None if quote else char
        elif char == "#" and quote is None and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def shell_commands(lang: str, body: str) -> Iterator[str]:
    """The commands of a shell block (continuation lines joined); a plain block only holds the lines that start
    like a command (it may be a diagram)."""
    joined = body.replace("\\\n", " ")
    for line in joined.splitlines():
        text = normalise(without_comment(line)).removeprefix("$ ")
        if text and (lang or line.strip().startswith(COMMAND_PREFIXES)):
            yield text


def documented() -> tuple[list[Documented], list[Documented]]:
    """(shell commands, Python snippets) of the docs, in order."""
    shell, python = [], []
    for doc in DOCS:
        text = (REPO / doc).read_text()
        for block in BLOCK.finditer(text):
            lang, body = block.group(1), block.group(2)
            where = f"{doc}:{text[: block.start()].count(chr(10)) + 1}"
            if lang == "python":
                python.append(Documented(body, where))
            elif lang in SHELL_BLOCKS:
                shell += [Documented(c, where) for c in shell_commands(lang, body)]
        if doc == "README.md":  # its inline commands, in tables and prose (a command may wrap across lines)
            outside = BLOCK.sub(lambda m: "\n" * m.group(0).count("\n"), text)
            for found in re.finditer(r"`((?:python -m|make) [^`]+)`", outside):
                shell.append(Documented(normalise(found.group(1).replace("\n", " ")),
                                        f"{doc}:{outside[: found.start()].count(chr(10)) + 1}"))
    return shell, python


def snippet_key(snippet: str) -> str:
    """A Python snippet's name in the table: its first line that is not an import."""
    return next(normalise(without_comment(line)) for line in snippet.splitlines()
                if line.strip() and not line.startswith(("import ", "from ")))


def table() -> dict[str, Any]:
    return yaml.safe_load(TABLE.read_text())


def entries() -> dict[str, dict[str, Any]]:
    return {normalise(entry["command"]): entry for entry in table()["shell"]}


def snippets() -> dict[str, dict[str, Any]]:
    return {entry["first_line"]: entry for entry in table()["python"]}


def test_every_documented_command_has_a_reviewed_entry_and_every_entry_a_command() -> None:
    shell, python = documented()
    commands, names = {d.text for d in shell}, {snippet_key(d.text) for d in python}
    missing = sorted({f"{d.where}: {d.text}" for d in shell if d.text not in entries()})
    assert not missing, f"documented commands without an entry in {TABLE.name}: {missing}"
    assert not sorted(set(entries()) - commands), f"entries whose command left the docs: {set(entries()) - commands}"
    missing = [f"{d.where}: {snippet_key(d.text)}" for d in python if snippet_key(d.text) not in snippets()]
    assert not missing, f"documented Python snippets without an entry in {TABLE.name}: {missing}"
    assert not set(snippets()) - names, f"entries whose snippet left the docs: {set(snippets()) - names}"
    for entry in [*entries().values(), *snippets().values()]:
        assert ("run" in entry) != ("compose" in entry), f"{entry}: give either run: or compose: <why>"
        assert "compose" not in entry or str(entry["compose"]).strip(), f"{entry}: compose: needs its reason"


# --- running and composing ---------------------------------------------------------------------------------------


class Parsed(Exception):
    """Raised by a patched argparse once a command's own parser accepted its arguments."""


def parse_only(module: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Let `module.main(argv)` parse `argv` with its own argparse parser, and stop there (a bad argument exits 2)."""
    real = argparse.ArgumentParser.parse_args

    def parse(self: argparse.ArgumentParser, args: Any = None, namespace: Any = None) -> argparse.Namespace:
        real(self, args, namespace)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse)
    command = importlib.import_module(module)
    if not hasattr(command, "main"):  # a package: its __main__
        command = importlib.import_module(f"{module}.__main__")
    with pytest.raises(Parsed):
        command.main(argv)


def split(command: str) -> tuple[str, list[str]]:
    """(module, arguments) of `[torchrun|srun ...] python -m MODULE ARGS` ("..." placeholders left out), or
    ("make", [target])."""
    tokens = [t for t in shlex.split(command) if t != "..."]
    if tokens[0] == "make":
        return "make", tokens[1:]
    i = tokens.index("-m")
    return tokens[i + 1], tokens[i + 2:]


def make_commands(target: str) -> list[str]:
    """The latent_ndm commands `make <target>` runs (a dry run, variables expanded)."""
    dry = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, f"make -n {target}: {dry.stderr}"
    script = dry.stdout.replace("\\\n", " ").replace("$s", "0")  # continuation lines joined; a loop's first seed
    parts = (part.strip() for line in script.splitlines() for part in re.split(r"&&|\|\||;", line))
    return [part for part in parts if re.search(r"-m latent_ndm\.(\w+)", part)]


def compose(module: str, args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Check `module`'s arguments with the command's own parser: Hydra's composition, or argparse."""
    if module == "make":
        for line in make_commands(args[0]):
            compose(*split(line), monkeypatch)
    elif module.removeprefix("latent_ndm.") in HYDRA_COMMANDS:
        assert compose_command_line(module.removeprefix("latent_ndm."), args) is not None
    else:
        parse_only(module, args, monkeypatch)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path, tiny_vae_run: Path) -> dict[str, str]:
    """A scratch folder laid out as the docs assume after `make demo`, at the tiny runs' size: runs/vae/default (the
    session's tiny VAE) and runs/ndm/default (a 2-step tiny NDM on it); a folder of PNGs for `data_tools.shard`."""
    from latent_ndm.training.run import train
    from tests.support.tiny_runs import ndm_cfg

    root = tmp_path_factory.mktemp("docs")
    shutil.copytree(tiny_vae_run, root / "runs" / "vae" / "default")
    train(ndm_cfg(root / "runs" / "ndm" / "default", tiny_data, root / "runs" / "vae" / "default" / "export",
                  "trainer.max_steps=2", "trainer.val_check_interval=2"))
    pngs = root / "pngs"
    pngs.mkdir()
    for i in range(20):
        Image.new("RGB", (64, 64), (10 * i, 100, 200 - 10 * i)).save(pngs / f"{i}.png")
    return {"scratch": str(root), "data": str(tiny_data), "pngs": str(pngs)}


def filled(text: str, places: dict[str, str]) -> str:
    """`text` with the scratch layout's places ({scratch}, {data}, {pngs}) filled in."""
    for name, value in places.items():
        text = text.replace(f"{{{name}}}", value)
    return text


def run_command(module: str, args: list[str], entry: dict[str, Any], places: dict[str, str]) -> str:
    """Run `module` with `args` + the entry's shrinking overrides, in-process; what it printed is returned by the
    capture of the caller."""
    shrink = table()["shrink"]
    extra = [filled(str(o), places) for a in entry["run"] or []
             for o in (shrink[a[1:]] if str(a).startswith("@") else [a])]
    if module.removeprefix("latent_ndm.") in HYDRA_COMMANDS:
        name = module.removeprefix("latent_ndm.")
        cfg = compose_command_line(name, [*args, *extra])
        if name == "train":
            from latent_ndm.training.run import train

            train(cfg, [*args, *extra])
        else:
            from latent_ndm.cli import run_or_exit

            run_or_exit(importlib.import_module(module).run, cfg)
        return name
    code = importlib.import_module(module).main([*args, *extra])
    assert code in (0, None), f"{module} {args + extra} exited {code}"
    return module


@pytest.mark.parametrize("command", sorted(entries()))
def test_each_documented_command_runs_or_composes(command: str, request: pytest.FixtureRequest,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    entry = entries()[command]
    text = command
    if "run" in entry:
        places = request.getfixturevalue("scratch")
        for old, new in (entry.get("replace") or {}).items():
            text = text.replace(old, filled(new, places))
        monkeypatch.chdir(places["scratch"])
        run_command(*split(text), entry, places)
    else:
        for old, new in (entry.get("replace") or {}).items():
            text = text.replace(old, new)
        compose(*split(text), monkeypatch)


@pytest.mark.parametrize("first_line", sorted(snippets()))
def test_each_python_snippet_runs(first_line: str, request: pytest.FixtureRequest,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    entry = snippets()[first_line]
    snippet = next(d.text for d in documented()[1] if snippet_key(d.text) == first_line)
    for old, new in (entry.get("replace") or {}).items():
        assert old in snippet, f"{first_line}: the table replaces {old!r}, which the snippet no longer holds"
        snippet = snippet.replace(old, new)
    if "run" in entry:
        if entry["run"] == "scratch":
            monkeypatch.chdir(request.getfixturevalue("scratch")["scratch"])
        exec(compile(snippet, first_line, "exec"), {"__name__": "__docs__"})  # noqa: S102 - the docs' own code
    else:
        compile(snippet, first_line, "exec")
