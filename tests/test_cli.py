import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from diffcomp.cli import main
from diffcomp.relational.audit import audit_file

GOOD = "subject,relation,object\nstar,on top of,heart\nheart,at the bottom of,star\nsun,above,star\nstar,below,sun\n"


def write(tmp_path, text, name="triples.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_audit_prints_a_table_and_writes_nested_json(tmp_path, capsys):
    triples, out = write(tmp_path, GOOD), tmp_path / "out" / "audit.json"
    assert main(["audit", str(triples), "--vocab-size", "4", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result) == {"visual", "linguistic", "coverage", "n_triples"}
    assert set(result["visual"]) == set(result["linguistic"]) == {"completeness_r1", "completeness_r2", "balance"}
    assert result == audit_file(triples, 4)
    # Two images (star over heart, sun over star), each with both captions; "above"/"below" are
    # the caption relations' synonyms: 4 of the 2 * 4 * 3 = 24 triples.
    assert result["coverage"] == pytest.approx(100 * 4 / 24)
    assert result["visual"]["completeness_r1"] == 50.0  # star and sun are drawn on top
    stdout = capsys.readouterr().out
    assert "4 triples, vocabulary of 4 nouns" in stdout
    assert "visual" in stdout and "linguistic" in stdout and "coverage: 16.67%" in stdout


def test_audit_without_json_writes_nothing(tmp_path, capsys):
    triples = write(tmp_path, GOOD)
    assert main(["audit", str(triples), "--vocab-size", "3"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["triples.csv"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("subject,relation,object\n", "no triples"),
        ("subject,rel,object\nstar,on top of,heart\n", "line 1: missing column(s) relation"),
        ("subject,relation,object\nstar,on top of,heart\nstar,next to,heart\n", "line 3: unknown relation 'next to'"),
        ("subject,relation,object\nstar,above,star\n", "line 2: noun 'star' is related to itself"),
        (
            "subject,relation,object\na,above,b\nc,above,d\ne,above,f\n",
            "6 distinct nouns, more than the vocabulary size 4",
        ),
    ],
)
def test_bad_csv_exits_2_with_message_and_no_json(tmp_path, capsys, text, message):
    triples, out = write(tmp_path, text), tmp_path / "audit.json"
    assert main(["audit", str(triples), "--vocab-size", "4", "--json", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("diffcomp audit: error: ")
    assert message in captured.err and str(triples) in captured.err
    assert captured.out == ""
    assert not out.exists()


def test_missing_file_exits_2(tmp_path, capsys):
    assert main(["audit", str(tmp_path / "absent.csv"), "--vocab-size", "4"]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["audit", "x.csv"], "the following arguments are required: --vocab-size"),
        (["audit", "x.csv", "--vocab-size", "1"], "must be at least 2"),
        (["audit", "x.csv", "--vocab-size", "ten"], "not an integer"),
        ([], "required: COMMAND"),
    ],
)
def test_usage_errors_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_console_script(tmp_path):
    """The installed `diffcomp` entry point (pyproject's [project.scripts]) runs main()."""
    executable = Path(sys.executable).with_name("diffcomp")
    command = [str(executable)] if executable.exists() else [shutil.which("diffcomp") or "diffcomp"]
    triples, out = write(tmp_path, GOOD), tmp_path / "audit.json"
    ok = subprocess.run([*command, "audit", str(triples), "--vocab-size", "4", "--json", str(out)], capture_output=True)
    assert ok.returncode == 0 and json.loads(out.read_text())["n_triples"] == 4
    bad = subprocess.run(
        [*command, "audit", str(write(tmp_path, "", "empty.csv")), "--vocab-size", "4"], text=True, capture_output=True
    )
    assert bad.returncode == 2 and "empty file" in bad.stderr
