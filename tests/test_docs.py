"""The reference in docs/ holds to the code: docs/cli.md names every option of every subcommand (and no other),
every link between the pages resolves, and every Python block of a page runs (offline: small models in place of
the Qwen3 ones, a fake chat model in place of a hosted one)."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import DOCS, FAKE_ANSWER, README, ROOT, python_blocks, run_page

CLI_PAGE = DOCS / "cli.md"
MARKDOWN = [README, ROOT / "BENCHMARKS.md", ROOT / "CHANGELOG.md", *sorted(DOCS.glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    from qwen3_rag.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {"": parser, **sub.choices}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings if flag not in ("-h", "--help")}


def _cli_section(name: str) -> str:
    """The part of docs/cli.md under ``## `qwen3-rag NAME` `` (``## Global options`` for the program itself)."""
    heading = f"## `qwen3-rag {name}`" if name else "## Global options"
    text = CLI_PAGE.read_text(encoding="utf-8")
    assert heading in text, f"docs/cli.md has no section {heading!r}"
    section = text[text.index(heading) + len(heading):]
    return section[: section.find("\n## ")] if "\n## " in section else section


@pytest.mark.parametrize("name", list(_subcommands()))
def test_cli_reference_names_every_option(name):
    section = _cli_section(name)
    for flag in sorted(_options(_subcommands()[name])):
        assert re.search(rf"`{re.escape(flag)}[` \[]", section), (
            f"docs/cli.md does not document `qwen3-rag {name} {flag}` in its section")


@pytest.mark.parametrize("name", list(_subcommands()))
def test_cli_reference_lists_only_real_options(name):
    first_cells = re.findall(r"^\| ((?:\\\||[^|])+?) \|", _cli_section(name), re.M)  # a cell may hold `\|`
    assert "option" in first_cells, f"the {name or 'global'} section of docs/cli.md has no option table"
    listed = {flag for cell in first_cells for flag in re.findall(r"`(-{1,2}[a-z][\w-]*)", cell)}
    assert listed <= _options(_subcommands()[name]) | {"-h", "--help"}, (
        f"docs/cli.md lists options that `qwen3-rag {name}` does not have: {listed - _options(_subcommands()[name])}")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", FENCE.sub("", page.read_text(encoding="utf-8")), re.M):
        slug = _slug(heading.strip())
        anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_between_pages_resolve(page):
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.name}: the link ({target}) points at nothing"
        if anchor:
            assert anchor in _anchors(resolved), f"{page.name}: ({target}) names no heading of {resolved.name}"


def test_docs_index_links_every_page():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    for page in sorted(DOCS.glob("*.md")):
        if page.name != "README.md":
            assert f"]({page.name})" in index, f"docs/README.md does not link {page.name}"


@dataclass(frozen=True)
class Page:
    """How a page's examples run: ``prelude`` makes what they take as given, ``epilogue`` checks their names,
    and ``expect`` are strings their output must hold."""

    prelude: str = ""
    epilogue: str = ""
    expect: tuple[str, ...] = ()


_DOCS_FOLDER = """
from pathlib import Path
Path("docs").mkdir()
Path("docs/ops.md").write_text("# Ops\\n\\nLogs are rotated nightly by logrotate.\\n")
Path("docs/deploy.md").write_text("# Deploys\\n\\nDeploys go out on Tuesdays.\\n")
"""

_BEIR_FOLDER = """
import json
Path("data/scifact/qrels").mkdir(parents=True)
Path("data/scifact/corpus.jsonl").write_text("".join(json.dumps(d) + "\\n" for d in [
    {"_id": "d1", "title": "Logs", "text": "Logs are rotated nightly by logrotate."},
    {"_id": "d2", "title": "Deploys", "text": "Deploys go out on Tuesdays."},
    {"_id": "d3", "title": "Backups", "text": "Backups run every Sunday."}]))
Path("data/scifact/queries.jsonl").write_text(
    '{"_id": "q1", "text": "when are logs rotated?"}\\n{"_id": "q2", "text": "when do deploys go out?"}\\n')
Path("data/scifact/qrels/test.tsv").write_text("query-id\\tcorpus-id\\tscore\\nq1\\td1\\t1\\nq2\\td2\\t1\\n")
"""

_LABELS_FOLDER = """
Path("my-labels/qrels").mkdir(parents=True)
Path("my-labels/corpus.jsonl").write_text("")
_asked = [("when are logs rotated?", "docs/ops.md"), ("when do deploys go out?", "docs/deploy.md")] * 10
Path("my-labels/queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": q}) + "\\n"
                                                  for i, (q, _) in enumerate(_asked)))
Path("my-labels/qrels/test.tsv").write_text("query-id\\tcorpus-id\\tscore\\n" + "".join(
    f"q{i}\\t{doc}\\t1\\n" for i, (_, doc) in enumerate(_asked)))
"""

PAGES = {
    "docs/python-api.md": Page(
        prelude=_DOCS_FOLDER + _BEIR_FOLDER + _LABELS_FOLDER,
        epilogue="assert report.num_queries == 2 and set(report.metrics) == {'dense', 'bm25', 'hybrid'}\n"
                 "assert context.sources[0].startswith('[1] ') and result.context.hits\n"
                 "assert calibration.queries == 20 and Index.read_manifest('my-index')['hybrid']['alpha'] == "
                 "calibration.alpha\n",
        expect=("(2, 384) 384 mean 256", "docs/ops.md", FAKE_ANSWER, "'mrr@10': 0.5",
                "hybrid calibrated on 20 queries of my-labels", "(calibrated on 20 queries of my-labels)"),
    ),
    "docs/index-format.md": Page(
        prelude=_DOCS_FOLDER + "from qwen3_rag import ingest\n"
                               "ingest(['docs'], 'my-index', model='Qwen/Qwen3-Embedding-0.6B')\n",
        expect=("'manifest.json', 'store.sqlite'", "3 mean 384 {"),
    ),
    "docs/milvus.md": Page(
        prelude=_DOCS_FOLDER,
        expect=("2 added, 0 updated, 0 unchanged", "0 added, 0 updated, 2 unchanged", "docs/ops.md  Logs are rotated",
                "\n384\n"),
    ),
    "docs/exactness.md": Page(
        expect=(r"\nQuery:What is the capital of China?'", "<Document>: Beijing is the capital.<|im_end|>"),
    ),
}

# Pages whose examples another test runs, because it needs more than the core: page -> that test file.
RUN_ELSEWHERE = {"README.md": "test_readme_models.py", "docs/integrations.md": "integrations/test_readme.py",
                 "docs/server.md": "server/test_server_docs.py"}


@pytest.mark.parametrize("name", sorted(PAGES))
def test_page_examples_run(name, tmp_path, minilm_path, tiny_qwen3_reranker_dir):
    if "langchain_openai" in (ROOT / name).read_text(encoding="utf-8"):
        pytest.importorskip("langchain_core")  # the fake chat model that stands in for ChatOpenAI
    page = PAGES[name]
    proc = run_page(ROOT / name, tmp_path, minilm_path, tiny_qwen3_reranker_dir, prelude=page.prelude,
                    epilogue=page.epilogue)
    assert proc.returncode == 0, proc.stderr[-5000:]
    for expected in page.expect:
        assert expected in proc.stdout, f"{name}: {expected!r} not in its output:\n{proc.stdout[-3000:]}"


def test_every_page_with_python_is_run():
    with_code = {str(p.relative_to(ROOT)) for p in [README, *DOCS.glob("*.md")] if python_blocks(p)}
    assert with_code == set(PAGES) | set(RUN_ELSEWHERE)
    for name, test_file in RUN_ELSEWHERE.items():
        source = (Path(__file__).parent / test_file).read_text(encoding="utf-8")
        assert Path(name).stem in source, f"{test_file} does not run {name}"


def test_few_blocks_are_marked_no_run():
    skipped = [str(p.relative_to(ROOT)) for p in [README, *DOCS.glob("*.md")] for _ in python_blocks(p, runnable=False)]
    assert len(skipped) <= 3, f"```python no-run blocks are untested; keep them few: {skipped}"
