"""Hostile design files and design field values: each is a valid CellDesign or one ConfigError naming the
file or field, never a traceback, a hang or an extra netlist line (see docs/trust.md)."""
import dataclasses
import math
import os
import re
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gaincell.circuits.cells import cell_transient
from gaincell.app.cli import main
from gaincell.design import PRESETS, CellDesign, design_from_dict, load_design
from gaincell.design_text import MAX_DESIGN_FILE_BYTES
from gaincell.errors import ConfigError
from hypothesis_profiles import examples

INJECTED = "x\n.control\nshell touch /tmp/gaincell-injected\n.endc"

# (case id, file name, content, the field the error names or None for the whole file, words the message holds)
HOSTILE_FILES = [
    ("toml-syntax", "cell.toml", 'name = "open\n', None, ["not valid TOML", "line 1"]),
    ("toml-duplicate-key", "cell.toml", 'name = "a"\nname = "b"\n', None, ["not valid TOML", "line 2"]),
    ("toml-empty", "cell.toml", "", None, ["no design fields"]),
    ("toml-deep-nesting", "cell.toml", "name = " + "[" * 5000 + "]" * 5000 + "\n", None, ["nested too deeply"]),
    ("toml-5000-digit-integer", "cell.toml", "vdd_v = " + "9" * 5000 + "\n", None, ["cannot be read"]),
    ("toml-nul-byte", "cell.toml", 'name = "a\0"\n', None, ["binary", "NUL"]),
    ("yaml-syntax", "cell.yaml", "name: [open\n", None, ["not valid YAML", "line 2"]),
    ("yaml-bad-indentation", "cell.yaml", "write:\n  w_m: 1e-7\n l_m: 4e-8\n", None, ["not valid YAML", "line 3"]),
    ("yaml-duplicate-key", "cell.yaml", "name: a\nvdd_v: 1.0\nname: b\n", None, ["'name' twice", "line 3"]),
    ("yaml-duplicate-nested-key", "cell.yml", "write:\n  w_m: 1.0e-7\n  w_m: 2.0e-7\n", None, ["'w_m' twice"]),
    ("yaml-empty", "cell.yaml", "", None, ["no design fields"]),
    ("yaml-comments-only", "cell.yaml", "# nothing here\n", None, ["no design fields"]),
    ("yaml-top-level-list", "cell.yaml", "- name\n- vdd_v\n", None, ["table of design fields", "list"]),
    ("yaml-top-level-string", "cell.yaml", "just some words\n", None, ["table of design fields", "str"]),
    ("yaml-top-level-number", "cell.yaml", "42\n", None, ["table of design fields", "int"]),
    ("yaml-flow-nesting", "cell.yaml", "name: " + "[" * 1500 + "]" * 1500 + "\n", None, ["nested too deeply"]),
    ("yaml-block-nesting", "cell.yaml", "name:\n  " + "- " * 5000 + "x\n", None, ["nested too deeply"]),
    ("yaml-python-tag", "cell.yaml", 'name: !!python/object/apply:os.system ["touch /tmp/gaincell-x"]\n', None,
     ["tag that is not allowed", "line 1"]),
    ("yaml-python-name-tag", "cell.yaml", "name: !!python/name:os.system\n", None, ["tag that is not allowed"]),
    ("yaml-unknown-local-tag", "cell.yaml", "name: !mine x\n", None, ["tag that is not allowed"]),
    ("yaml-invalid-date", "cell.yaml", "name: 2001-13-45\n", None, ["cannot be read"]),
    ("yaml-bad-explicit-int", "cell.yaml", "dac_levels: !!int abc\n", None, ["cannot be read"]),
    ("yaml-unhashable-key", "cell.yaml", "? [a, b]\n: 1\n", None, ["unhashable"]),
    ("yaml-nul-byte", "cell.yaml", "name: a\0b\n", None, ["binary", "NUL"]),
    ("invalid-utf8", "cell.toml", b'name = "\xff\xfe"\n', None, ["not UTF-8", "offset 8"]),
    ("binary-bytes", "cell.yaml", bytes(range(256)), None, ["binary"]),
    ("huge-file", "cell.toml", "# padding\n" * (MAX_DESIGN_FILE_BYTES // 10 + 1), None, ["larger than"]),
    ("unknown-suffix", "cell.json", '{"name": "x"}', None, ["use a .toml"]),
    ("list-where-table", "cell.toml", "write = [1, 2]\n", "write", ["table with w_m and l_m"]),
    ("table-where-number", "cell.toml", "vdd_v = { a = 1 }\n", "vdd_v", ["number between"]),
    ("string-where-list", "cell.toml", 'model_libraries = "cmos_generic.lib"\n', "model_libraries",
     ["list of shipped .lib names"]),
    ("list-where-string", "cell.toml", "name = [1]\n", "name", ["SPICE name"]),
    ("number-where-string", "cell.yaml", "name: 1.5\n", "name", ["SPICE name"]),
    ("table-where-mapping-list", "cell.toml", 'model_names = ["nch"]\n', "model_names", ["table mapping"]),
    ("bool-where-number", "cell.toml", "vdd_v = true\n", "vdd_v", ["number between", "True"]),
    ("bool-where-integer", "cell.yaml", "dac_levels: yes\n", "dac_levels", ["integer"]),
    ("bool-where-size", "cell.toml", "[write]\nw_m = true\nl_m = 4e-8\n", "write.w_m", ["between 1e-09 and 0.001 m"]),
    ("nan", "cell.toml", "cs_f = nan\n", "cs_f", ["nan"]),
    ("inf", "cell.toml", "vdd_v = inf\n", "vdd_v", ["inf"]),
    ("negative-inf-size", "cell.toml", "[read_n]\nl_m = -inf\n", "read_n.l_m", ["between 1e-09 and 0.001 m"]),
    ("yaml-nan", "cell.yaml", "write_time_s: .nan\n", "write_time_s", ["nan"]),
    ("huge-number", "cell.toml", "t_max_s = 1e308\n", "t_max_s", ["number between"]),
    ("negative-integer", "cell.toml", "dac_levels = -8\n", "dac_levels", ["integer in [2, 1024]"]),
    ("unknown-field", "cell.toml", "vdd = 1.0\n", "vdd", ["not a design field"]),
    ("non-string-key", "cell.yaml", "1: 2\n", "1", ["not a design field"]),
    ("base-list", "cell.toml", 'base = ["cmos-generic"]\n', "base", ["cmos-generic, igzo-generic"]),
    ("name-injection", "cell.toml", f"name = {INJECTED!r}\n".replace("'", '"'), "name", ["SPICE name"]),
    ("name-comment", "cell.toml", 'name = "a*b"\n', "name", ["SPICE name"]),
    ("name-semicolon", "cell.toml", 'name = "a;shell ls"\n', "name", ["SPICE name"]),
    ("name-command-word", "cell.toml", 'name = "memory-system"\n', "name", ["word 'system'"]),
    ("corner-command-word", "cell.yaml", "corner: SHELL\n", "corner", ["word 'SHELL'"]),
    ("model-name-command-word", "cell.toml", '[model_names]\npmos_gen = "shell"\n', "model_names.pmos_gen",
     ["word 'shell'"]),
    ("library-path-command-word", "cell.toml", 'model_libraries = ["shell/models.lib"]\n', "model_libraries[0]",
     ["word 'shell'"]),
    ("name-too-long", "cell.toml", f'name = "{"a" * 65}"\n', "name", ["64 characters"]),
    ("corner-injection", "cell.yaml", "corner: \"tt\\n.control\\nshell ls\\n.endc\"\n", "corner", ["SPICE name"]),
    ("corner-space", "cell.toml", 'corner = "tt shell"\n', "corner", ["SPICE name"]),
    ("corner-brace", "cell.toml", 'corner = "{tt}"\n', "corner", ["SPICE name"]),
    ("model-name-injection", "cell.toml", '[model_names]\nnmos_gen = "nch\\n*#shell ls"\n',
     "model_names.nmos_gen", ["SPICE name"]),
    ("model-name-backslash", "cell.toml", '[model_names]\nnmos_gen = "n\\\\1"\n', "model_names.nmos_gen",
     ["SPICE name"]),
    ("model-name-unknown-shipped", "cell.toml", '[model_names]\nnfet = "nch"\n', "model_names",
     ["nmos_gen, pmos_gen"]),
    ("library-newline", "cell.toml", 'model_libraries = ["lib/a\\n.control.lib"]\n', "model_libraries[0]",
     ["no line breaks"]),
    ("library-missing", "cell.toml", 'model_libraries = ["lib/none.lib"]\n', "model_libraries[0]", ["does not exist"]),
    ("library-folder", "cell.toml", 'model_libraries = ["lib"]\n', "model_libraries[0]", ["shipped .lib name"]),
    ("library-folder-path", "cell.toml", 'model_libraries = ["lib/.."]\n', "model_libraries[0]", ["folder"]),
    ("library-path-with-space", "cell.toml", 'model_libraries = ["lib/my models.lib"]\n', "model_libraries[0]",
     ["space"]),
    ("library-shipped-non-lib", "cell.toml", 'model_libraries = ["__init__.py"]\n', "model_libraries[0]",
     ["shipped .lib name"]),
    ("library-number", "cell.toml", "model_libraries = [3]\n", "model_libraries[0]", ["shipped .lib name"]),
    ("source-newline", "cell.toml", 'source = "paper\\n.control"\n', "source", ["one line"]),
]


@pytest.fixture
def design_folder(tmp_path):
    """A folder with a user library, one whose path has a space and one in a folder named shell."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "models.lib").write_text("* my models\n.model nch nmos level=54\n")
    (tmp_path / "lib" / "my models.lib").write_text("* my models\n.model nch nmos level=54\n")
    (tmp_path / "shell").mkdir()
    (tmp_path / "shell" / "models.lib").write_text("* my models\n.model nch nmos level=54\n")
    return tmp_path


def write_case(folder: Path, file_name: str, content) -> Path:
    path = folder / file_name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.mark.parametrize("file_name, content, field, words",
                         [case[1:] for case in HOSTILE_FILES], ids=[case[0] for case in HOSTILE_FILES])
def test_hostile_design_file_is_a_config_error(design_folder, file_name, content, field, words):
    path = write_case(design_folder, file_name, content)
    with pytest.raises(ConfigError) as info:
        load_design(path)
    message = str(info.value)
    assert str(path) in message
    assert info.value.parameter == (field or f"design file {path}")
    for word in words:
        assert word in message
    assert len(message) < 1000


@pytest.mark.parametrize("file_name, content", [case[1:3] for case in HOSTILE_FILES],
                         ids=[case[0] for case in HOSTILE_FILES])
def test_cli_reports_a_hostile_design_file_in_one_line(design_folder, file_name, content):
    path = write_case(design_folder, file_name, content)
    out = design_folder / "o.h5"
    result = CliRunner().invoke(main, ["simulate", "cell", "--design", str(path), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert result.output.startswith("error: ") and "Traceback" not in result.output
    assert not out.exists()


def test_folder_fifo_and_unreadable_design_paths(tmp_path, monkeypatch):
    folder = tmp_path / "cell.toml"
    folder.mkdir()
    with pytest.raises(ConfigError, match="is a folder"):
        load_design(folder)
    with pytest.raises(ConfigError, match="is a folder"):
        load_design(tmp_path)
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_design(fifo)  # must not block waiting for a writer
    locked = write_case(tmp_path, "locked.toml", 'name = "x"\n')

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(ConfigError, match="cannot be read: Permission denied") as info:
        load_design(locked)
    assert str(locked) in str(info.value)


def test_missing_design_names_the_presets(tmp_path):
    with pytest.raises(ConfigError, match="neither a preset .*cmos-generic"):
        load_design(tmp_path / "none.toml")
    with pytest.raises(ConfigError, match="neither a preset"):
        load_design("x" * 5000)  # longer than a file name may be


def test_billion_laughs_aliases_give_a_short_error(tmp_path):
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = write_case(tmp_path, "laughs.yaml", "\n".join(levels) + "\nmodel_libraries: *a8\n")
    with pytest.raises(ConfigError) as info:
        load_design(path)
    assert len(str(info.value)) < 1000


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    path = write_case(tmp_path, "merge.yaml", "sizes: &s {w_m: 1.0e-7, l_m: 5.0e-8}\n")
    with pytest.raises(ConfigError, match="sizes: is not a design field"):
        load_design(path)
    path = write_case(tmp_path, "merge2.yaml", "write:\n  <<: {w_m: 1.0e-7, l_m: 5.0e-8}\n  l_m: 6.0e-8\n")
    assert load_design(path).write.l_m == 6.0e-8


# --- property-based fuzzing -------------------------------------------------------------------------------

FUZZ = settings(deadline=5000, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
HOSTILE_TEXT = st.text(st.sampled_from(list("aZ09_.-* ;$={}()\"',\n\r\t\x00\x0b\x1c\x85\u2028\\/~#+!&é中🙂"))
                       | st.characters(), max_size=40)
NAME_CHARACTERS = "abcxyzABCXYZ0189_"
NAME_LIKE = st.tuples(st.sampled_from(NAME_CHARACTERS), st.text(NAME_CHARACTERS + ".-", max_size=20)).map("".join)
FIELD_TEXT = NAME_LIKE | st.tuples(NAME_LIKE, HOSTILE_TEXT, NAME_LIKE).map("".join) | HOSTILE_TEXT
LEAVES = (st.none() | st.booleans() | st.integers() | st.integers(min_value=10 ** 30) | st.floats()
          | st.sampled_from([math.nan, math.inf, -math.inf, -1e-9, 0, 8, "cmos_generic.lib", "nmos_gen", "tt"])
          | HOSTILE_TEXT)
KEYS = HOSTILE_TEXT | st.sampled_from(["w_m", "l_m", "nmos_gen"])
NESTED = st.lists(LEAVES, max_size=3) | st.dictionaries(KEYS, LEAVES, max_size=3)
JUNK = LEAVES | NESTED | st.lists(NESTED, max_size=2) | st.dictionaries(KEYS, NESTED, max_size=2)
SIZE = st.fixed_dictionaries({}, optional={"w_m": st.floats(1e-9, 1e-3), "l_m": st.floats(1e-9, 1e-3)})
PLAUSIBLE = {  # values that a valid design could hold, so that fuzzing reaches past the first refusal
    "base": st.sampled_from(list(PRESETS)), "name": NAME_LIKE, "corner": NAME_LIKE | st.just(""),
    "cell_subckt": st.sampled_from(["gcsigned", "gcsigned_igzo"]), "source": st.text(max_size=30),
    "model_libraries": st.lists(st.sampled_from(["cmos_generic.lib", "igzo_generic.lib"]), min_size=1, max_size=2),
    "model_names": st.dictionaries(st.sampled_from(["nmos_gen", "pmos_gen", "nmos_gen_hvt", "nmos_igzo"]), NAME_LIKE),
    "write": SIZE, "read_n": SIZE, "read_p": SIZE, "switch_n": SIZE, "switch_p": SIZE,
    "cs_f": st.floats(1e-18, 1e-9), "vdd_v": st.floats(0.3, 5.0), "v_in_v": st.floats(0, 0.9),
    "write_wl_v": st.floats(0.1, 5.0), "write_time_s": st.floats(1e-12, 1e-3), "t_max_s": st.floats(1e-12, 1e-3),
    "hold_wbl_v": st.floats(0, 0.9), "retention_gmin_s": st.floats(1e-30, 1e-12), "dac_levels": st.integers(2, 1024),
}
DESIGN_DICTS = st.fixed_dictionaries(
    {}, optional={name: st.one_of(*[plausible] * 5, JUNK) for name, plausible in PLAUSIBLE.items()}
) | st.dictionaries(HOSTILE_TEXT | st.integers() | st.sampled_from(list(PLAUSIBLE)), JUNK, max_size=4)


def netlist_lines(design: CellDesign) -> list[str]:
    """The `gaincell simulate cell` deck's lines, built without running ngspice."""
    circuit, _, _ = cell_transient(design, stored_v=design.vdd_v / 2, pulse_s=design.t_max_s)
    return str(circuit).splitlines()


def assert_no_line_injected(design: CellDesign) -> None:
    """The design's deck has as many lines as the same design with plain names, and no script lines."""
    plain = dataclasses.replace(design, name="plain", corner="plain" if design.corner else "",
                                model_names=tuple((shipped, "plain") for shipped, _ in design.model_names))
    lines = netlist_lines(design)
    assert len(lines) == len(netlist_lines(plain))
    assert not any(line.lstrip().lower().startswith((".control", ".endc", "*#")) for line in lines)


@settings(FUZZ, max_examples=examples(200))
@given(DESIGN_DICTS)
def test_fuzzed_design_dicts_are_a_design_or_a_config_error(raw):
    try:
        design = design_from_dict(raw)
    except ConfigError as exc:
        event("refused")
        assert len(str(exc)) < 1000
    else:
        event("valid design")
        assert all(isinstance(lib, str) for lib in design.model_libraries)
        assert_no_line_injected(design)


def renamed(lines: list[str], old: str, new: str) -> list[str]:
    """The lines with the whole word `old` replaced by `new` (what a changed field value should do)."""
    return [re.sub(rf"(?<=\s){re.escape(old)}(?=\s|$)", lambda _: new, line) for line in lines]


@settings(FUZZ, max_examples=examples(200))
@given(st.sampled_from(["name", "corner", "model_names"]), FIELD_TEXT)
def test_fuzzed_string_fields_never_add_a_netlist_line(field, value):
    def with_value(text):
        return {"model_names": {"nmos_gen": text}} if field == "model_names" else {field: text}

    try:
        design = design_from_dict(with_value(value))
    except ConfigError as exc:
        event("refused")
        assert exc.parameter.startswith(field)
        return
    event("valid design, netlist checked")
    assert_no_line_injected(design)
    lines = netlist_lines(design)
    if field == "corner" and value == "":  # no corner: a plain .include instead of `.lib FILE CORNER`
        assert lines == netlist_lines(PRESETS["cmos-generic"])
        return
    reference = netlist_lines(design_from_dict(with_value("zzref")))
    suffix = ":" if field == "name" else ""  # the title line reads "gaincell NAME: write ..."
    assert lines == renamed(reference, "zzref" + suffix, value + suffix)


# Pieces of design files, joined at random: fuzzing reaches the parsers and the field checks both.
TOML_TOKENS = ['name', 'corner', 'vdd_v', 'write', 'w_m', 'model_libraries', 'model_names', 'nmos_gen', 'base',
               ' = ', '=', '"', "'", '"""', '\n', '[', ']', '[[', ']]', '{', '}', ',', '.', '#', '1e-7', '0.9', '8',
               'nan', 'inf', '-inf', 'true', '1979-05-27', '"cmos_generic.lib"', '"x\\n.control"', '\\u0000', '\0',
               '\xff', 'é', ' ', '\t', '*', ';']
YAML_TOKENS = TOML_TOKENS + [': ', '- ', '&a ', '*a', '<<: ', '!!python/object:os.system ', '!!binary ', '? ',
                             '  ', '---\n', '...\n', '|\n', '>\n', '%YAML 1.1\n', '!x ', '.nan', '~', 'yes']
VALID_TOML = ('base = "igzo-generic"\nname = "mine"\ncs_f = 5e-15\ncorner = "tt"\n'
              'model_libraries = ["cmos_generic.lib"]\n[write]\nw_m = 1e-7\nl_m = 5e-8\n'
              '[model_names]\nnmos_gen = "nch"\n')
VALID_YAML = ('base: igzo-generic\nname: mine\ncs_f: 5.0e-15\ncorner: tt\nmodel_libraries: [cmos_generic.lib]\n'
              'write:\n  w_m: 1.0e-7\n  l_m: 5.0e-8\nmodel_names:\n  nmos_gen: nch\n')


def token_text(tokens):
    return st.lists(st.sampled_from(tokens), max_size=30).map("".join)


def spliced(text: str):
    """`text` with hostile text inserted at a random place."""
    return st.tuples(st.integers(0, len(text)), FIELD_TEXT).map(lambda cut: text[:cut[0]] + cut[1] + text[cut[0]:])


def renamed_to(text: str):
    """`text` with its design name (mine) replaced by fuzzed text."""
    return FIELD_TEXT.map(lambda name: text.replace("mine", name))


@pytest.fixture(scope="module")
def fuzz_folder():
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


@settings(FUZZ, max_examples=examples(200))
@given(st.sampled_from(["cell.toml", "cell.yaml"]),
       st.one_of(st.binary(max_size=200), token_text(TOML_TOKENS) | token_text(YAML_TOKENS),
                 spliced(VALID_TOML), spliced(VALID_YAML), renamed_to(VALID_TOML), renamed_to(VALID_YAML)).map(
           lambda content: content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass")))
def test_fuzzed_design_file_bytes_are_a_design_or_a_config_error(fuzz_folder, file_name, content):
    path = write_case(fuzz_folder, file_name, content)
    try:
        design = load_design(path)
    except ConfigError as exc:
        event("refused")
        assert str(path) in str(exc) and len(str(exc)) < 1000
    else:
        event("valid design")
        assert_no_line_injected(design)

