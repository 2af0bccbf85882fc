"""Fuzzing (issue 11): property tests of the readers, the folder walk and the manifest parser, and the crash corpus.

Inputs are mutated valid files (``asinfer.benchmarks.fuzz``: seeds, mutations and
the contract they are checked against), drawn by hypothesis with a small
budget so the default run stays fast. The long run is

    python -m asinfer.benchmarks.fuzz --seconds 600 --out tests/data/fuzz-corpus

and every input it found failing is replayed here, so a fixed bug stays fixed.
"""

from __future__ import annotations

import json
import os
import tempfile
import tracemalloc
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asinfer import engine
from asinfer.benchmarks import fuzz

# Malformed inputs make pydicom and OpenCV warn; that is expected here, not a finding.
pytestmark = pytest.mark.filterwarnings("ignore")

CORPUS = Path(__file__).parent / "data" / "fuzz-corpus"
MAX_PIXELS = fuzz.FUZZ_MAX_PIXELS
HARD_STOP_S = 10.0  # SIGALRM: an input still running is a hang (hypothesis' deadline only flags it afterwards)
# Memory a read may take: the decoded pixels several times over (stored, float32 after the modality LUT,
# colour planes), the file a few times over, and the interpreter's noise.
BYTES_PER_PIXEL = 32
BYTES_PER_FILE_BYTE = 16
SLACK_BYTES = 16 << 20

# Known slow, bounded: CharLS on crafted frames, and headers refused only at the engine's read limit (the hang
# that limit fixed now takes ~4.6 s on the 2-core box, just under the replay's 5 s "slow" line: a flake).
KNOWN_SLOW = ("read_frames-slow-", "read_frames-hang-a24415f7")
SLOW_BOUND_S = 30.0

BUDGET = settings(max_examples=30, deadline=timedelta(seconds=5))
SMALL = settings(max_examples=15, deadline=timedelta(seconds=5))

SEEDS = fuzz.seeds()
DICOM = [s for s in SEEDS if s.suffix == ".dcm"]
IMAGES = [s for s in SEEDS if s.suffix not in (".dcm", ".json")]
MANIFESTS = [s for s in SEEDS if s.suffix == ".json"]
BYTE_OPS = sorted(set(fuzz.MUTATORS) - {"dicom", "bomb"})
STRUCTURE_OPS = ["field", "chunk-dup", "chunk-drop"]


def ops(names: list[str], most: int = 4):
    """Mutation lists: hypothesis shrinks them to fewer ops and smaller positions."""
    word = st.integers(0, 2**32 - 1)
    return st.lists(st.tuples(st.sampled_from(names), word, word), min_size=1, max_size=most)


@pytest.fixture(scope="module", autouse=True)
def traced():
    """Trace Python and numpy allocations for the module (numpy reports its buffers to tracemalloc)."""
    tracemalloc.start()
    yield
    tracemalloc.stop()


def assert_contract(data: bytes, suffix: str) -> None:
    """Write ``data`` to a file and check the engine's error policy on it, within time and memory."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, f"input{suffix}")
        path.write_bytes(data)
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        with fuzz.deadline(HARD_STOP_S):
            problems = fuzz.check_file(path, MAX_PIXELS)
        grown = tracemalloc.get_traced_memory()[1] - before
    assert not problems, "; ".join(f"{p.key}: {p.detail}" for p in problems)
    budget = BYTES_PER_PIXEL * MAX_PIXELS + BYTES_PER_FILE_BYTE * len(data) + SLACK_BYTES
    assert grown <= budget, f"reading a {len(data)}-byte file took {grown >> 20} MiB (budget {budget >> 20} MiB)"


# --- readers -------------------------------------------------------------------------------------------------------

UNSUPPORTED_SEEDS = {"dicom/JPGExtended.dcm": "unsupported-compression"}  # 12-bit JPEG: GPL decoder only


@pytest.mark.parametrize("seed", [s for s in SEEDS if s.suffix != ".json"], ids=lambda s: s.name)
def test_every_seed_reads(seed, tmp_path):
    """The mutations start from valid files: a seed the engine cannot read leaves its decoder unfuzzed."""
    path = tmp_path / f"seed{seed.suffix}"
    path.write_bytes(seed.data)
    if seed.name in UNSUPPORTED_SEEDS:
        with pytest.raises(engine.InputError) as info:
            engine.read_frames(path, max_pixels=MAX_PIXELS)
        assert info.value.reason == UNSUPPORTED_SEEDS[seed.name]
    else:
        assert engine.read_frames(path, max_pixels=MAX_PIXELS)



@BUDGET
@given(seed=st.sampled_from(IMAGES), mutations=ops(BYTE_OPS + STRUCTURE_OPS * 3))
def test_mutated_png_jpeg_tiff_keep_the_contract(seed, mutations):
    assert_contract(fuzz.mutate(seed.data, mutations), seed.suffix)


@BUDGET
@given(seed=st.sampled_from(DICOM), mutations=ops(BYTE_OPS + ["field"] * 3))
def test_mutated_dicom_bytes_keep_the_contract(seed, mutations):
    assert_contract(fuzz.mutate(seed.data, mutations), seed.suffix)


@BUDGET
@given(seed=st.sampled_from(DICOM), edits=st.lists(st.sampled_from(fuzz.DICOM_EDITS), min_size=1, max_size=2))
def test_dicom_header_lies_keep_the_contract(seed, edits):
    data = seed.data
    for keyword, value in edits:
        data = fuzz.edit_dicom(data, keyword, value)
    assert_contract(data, seed.suffix)


MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", bytes(128) + b"DICM"]


@SMALL
@given(magic=st.sampled_from(MAGIC), tail=st.binary(max_size=600), suffix=st.sampled_from(fuzz.SUFFIXES[:-1]))
def test_random_bytes_behind_a_magic_number_keep_the_contract(magic, tail, suffix):
    assert_contract(magic + tail, suffix)


@pytest.mark.parametrize("size", [64 << 20])
@pytest.mark.parametrize("seed", [s for s in SEEDS if s.name in ("dicom/image_dfl.dcm", "png/grey8")],
                         ids=lambda s: s.name)
def test_deflate_bombs_stay_within_the_memory_budget(seed, size):
    """64 MiB of zeros deflated into a PNG IDAT or a deflated DICOM dataset: refused or read, never inflated whole."""
    bits = (size >> 20).bit_length() - 1  # the bomb op takes 1 MiB << (b % 9)
    assert_contract(fuzz.mutate(seed.data, [("bomb", 0, bits)]), seed.suffix)


# --- folder walk ---------------------------------------------------------------------------------------------------

NAMES = st.text(st.sampled_from("ab .é中😀-_~"), min_size=1, max_size=6).filter(lambda n: n not in (".", ".."))
FILE_KINDS = ("png", "dcm", "dcm-no-suffix", "tif", "empty", "text", "dicomdir")
ENTRY = st.one_of(
    st.tuples(st.just("file"), NAMES, st.sampled_from(FILE_KINDS)),
    st.tuples(st.just("link-up"), NAMES, st.integers(0, 4)),  # a symlink to an ancestor folder: a cycle
    st.tuples(st.just("link-file"), NAMES, st.integers(0, 50)),  # a second name for an earlier file
    st.tuples(st.just("broken"), NAMES, st.just(0)),
    st.tuples(st.just("fifo"), NAMES, st.just(0)),
)
TREE = st.recursive(st.lists(ENTRY, max_size=4),
                    lambda kids: st.lists(st.one_of(ENTRY, st.tuples(st.just("dir"), NAMES, kids)), max_size=4),
                    max_leaves=14)


def _content(kind: str) -> tuple[str, bytes | None]:
    """(suffix, bytes) of a file kind; bytes None for a file that is no image."""
    seed = {s.name: s for s in SEEDS}
    return {"png": (".png", seed["png/grey8"].data), "tif": (".tif", seed["tiff/grey8"].data),
            "dcm": (".dcm", seed["dicom/MR_small.dcm"].data),
            "dcm-no-suffix": ("", seed["dicom/MR_small.dcm"].data),
            "empty": (".png", b""), "text": (".txt", None), "dicomdir": ("", None)}[kind]


def build_tree(root: Path, spec, ancestors: list[Path], files: list[Path], images: list[Path]) -> None:
    """Materialise a generated tree; ``images`` gets the plain image files a walk must find."""
    for kind, name, arg in spec:
        path = root / name
        if os.path.lexists(path):
            continue
        if kind == "dir":
            path.mkdir()
            build_tree(path, arg, [*ancestors, path], files, images)
        elif kind == "file":
            suffix, data = _content(arg)
            path = path.with_name(name + suffix) if arg != "dicomdir" else root / "DICOMDIR"
            if os.path.lexists(path):
                continue
            path.write_bytes(data if data is not None else b"not an image\n")
            files.append(path)
            if data and not _hidden(path, ancestors[0]):
                images.append(path)
        elif kind == "link-up":
            path.symlink_to(ancestors[-1 - arg % len(ancestors)], target_is_directory=True)
        elif kind == "link-file" and files:
            path.symlink_to(files[arg % len(files)])
        elif kind == "broken":
            path.symlink_to(root / "missing target")
        elif kind == "fifo" and hasattr(os, "mkfifo"):
            os.mkfifo(path)


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _identity(path: Path) -> tuple[int, int]:
    st_ = os.stat(path)
    return st_.st_dev, st_.st_ino


@SMALL
@given(spec=TREE)
def test_folder_walk_terminates_and_yields_each_image_once(spec):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp, "walk root")
        root.mkdir()
        images: list[Path] = []
        build_tree(root, spec, [root], [], images)
        with fuzz.deadline(HARD_STOP_S):
            found = list(engine.iter_files(root))
            slices = list(engine.load_slices(root, engine.Preprocessor(size=fuzz.SLICE_SIZE, threads=1)))
        regular = [p for p in found if p.is_file()]
        assert len({_identity(p) for p in regular}) == len(regular), f"a file was yielded twice: {found}"
        missing = {_identity(p) for p in images} - {_identity(p) for p in regular}
        assert not missing, f"plain image files not found: {[p for p in images if _identity(p) in missing]}"
        assert not [s for s in slices if s.reason == "internal"], [s.message for s in slices if not s.ok]
        assert {str(p) for p in found} <= {s.source for s in slices}, "a walked file got no row"


# --- manifest ------------------------------------------------------------------------------------------------------

BIG = st.sampled_from([2**63, 10**400, -(10**30)])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | BIG | st.floats() | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4),
    max_leaves=20)
FULL = json.loads(next(s for s in MANIFESTS if s.name == "manifest/full").data)
FIELD_PATHS = [p for p in fuzz.json_paths(FULL) if p]  # the same paths the long run edits


def assert_manifest_contract(text: str | bytes) -> None:
    with fuzz.deadline(HARD_STOP_S):
        problems = fuzz.check_manifest(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    assert not problems, "; ".join(f"{p.key}: {p.detail}" for p in problems)


@BUDGET
@given(value=JSON)
def test_manifest_from_any_json_value_is_a_manifest_or_model_error(value):
    assert_manifest_contract(json.dumps(value))


@BUDGET
@given(path=st.sampled_from(FIELD_PATHS), value=JSON)
def test_manifest_with_any_value_in_any_field_is_a_manifest_or_model_error(path, value):
    doc = json.loads(json.dumps(FULL))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert_manifest_contract(json.dumps(doc))


@SMALL
@given(text=st.text(max_size=200) | st.binary(max_size=200))
def test_manifest_from_any_text_is_a_manifest_or_model_error(text):
    assert_manifest_contract(text)


@BUDGET
@given(seed=st.sampled_from(MANIFESTS), mutations=ops([*fuzz.JSON_MUTATORS, "flip", "truncate", "insert"]))
def test_mutated_manifests_are_a_manifest_or_model_error(seed, mutations):
    assert_manifest_contract(fuzz.mutate(seed.data, mutations))


NAME = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=12).filter(str.strip)
UNIT = st.floats(0, 1)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
FREE = st.recursive(st.none() | st.booleans() | st.integers(-(2**53), 2**53) | FINITE | st.text(max_size=10),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
                    max_leaves=10)
PARITY = st.builds(
    engine.ParityRecord, reference=st.sampled_from(list(engine.FORMATS)), n=st.integers(0, 10**6), threshold=UNIT,
    max_abs_dp=UNIT, mean_abs_dp=UNIT, agreement=UNIT, auc=st.none() | UNIT, auc_reference=st.none() | UNIT,
    dauc=st.none() | FINITE, dauc_interval=st.none() | st.tuples(FINITE, FINITE),
    agreement_interval=st.none() | st.tuples(UNIT, UNIT),
    settings=st.dictionaries(st.text(max_size=8), FREE, max_size=3))
ARTIFACT = st.builds(engine.Artifact, format=st.sampled_from(list(engine.FORMATS)),
                     file=st.from_regex(r"[a-z][a-z0-9_.]{0,10}(/[a-z0-9_.]{1,8})?", fullmatch=True)
                     .filter(lambda f: ".." not in f),
                     sha256=st.just("") | st.from_regex(r"[0-9a-f]{64}", fullmatch=True), bytes=st.integers(0, 2**40))


@st.composite
def manifests(draw):
    """Valid manifests: every field within what ``Manifest.validate`` accepts."""
    labels = draw(st.lists(NAME, min_size=2, max_size=2, unique=True))
    low = draw(st.floats(0, 99))
    artifacts = draw(st.lists(ARTIFACT, max_size=3, unique_by=lambda a: a.format))
    return engine.Manifest(
        name=draw(NAME), version=draw(NAME), labels=tuple(labels), threshold=draw(UNIT),
        input=engine.InputSpec(height=draw(st.integers(8, 4096)), width=draw(st.integers(8, 4096))),
        preprocessing=engine.PreprocessSpec(
            clahe_clip_limit=draw(st.floats(0.01, 1000)), clahe_tile_grid=draw(st.tuples(*[st.integers(1, 64)] * 2)),
            resize_down=draw(st.sampled_from(["area", "linear", "cubic", "nearest", "lanczos"])),
            percentile_low=low, percentile_high=draw(st.floats(low + 0.5, 100)),
            use_voi_window=draw(st.booleans()), stretch_8bit=draw(st.booleans())),
        artifacts=tuple(artifacts), description=draw(st.text(max_size=30)),
        training=draw(st.dictionaries(st.text(max_size=8), FREE, max_size=3)),
        metrics=draw(st.dictionaries(st.text(max_size=8), FREE, max_size=3)),
        parity=draw(st.dictionaries(st.sampled_from(list(engine.FORMATS)), PARITY, max_size=2)),
        tools=draw(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)),
        created=draw(st.text(max_size=20)))


@BUDGET
@given(manifest=manifests())
def test_manifest_round_trips_through_json(manifest):
    assert engine.Manifest.from_json(manifest.to_json()) == manifest


# --- the crash corpus ----------------------------------------------------------------------------------------------

ISOLATED = ("-hang", "-crash-", "-memory", "-exit-", "-slow")  # could kill or stall the test run: a child runs them


def _corpus(isolated: bool) -> list[Path]:
    return [p for p in fuzz.corpus_files(CORPUS) if any(tag in p.name for tag in ISOLATED) == isolated]


def test_the_corpus_is_there():
    assert fuzz.corpus_files(CORPUS), f"{CORPUS} holds no inputs: run python -m asinfer.benchmarks.fuzz"


@pytest.mark.parametrize("path", _corpus(isolated=False), ids=lambda p: p.name)
def test_corpus_input_keeps_the_contract(path):
    with fuzz.deadline(HARD_STOP_S):
        problems = fuzz.check_file(path, MAX_PIXELS)
    assert not problems, "; ".join(f"{p.key}: {p.detail}" for p in problems)


def test_corpus_hangs_crashes_and_blowups_stay_fixed():
    """Inputs that once hung, crashed or blew up the process, replayed in a child process under a memory cap."""
    paths = _corpus(isolated=True)
    if not paths:
        pytest.skip("no hang, crash or memory inputs in the corpus")
    slow = [p for p in paths if p.name.startswith(KNOWN_SLOW)]
    results = fuzz.replay_isolated([p for p in paths if p not in slow], timeout_s=HARD_STOP_S)
    # Known slow inputs (a pydicom element loop, CharLS on a crafted near-lossless frame): they must finish,
    # and keep the contract, within SLOW_BOUND_S; faster is open work (see the corpus README).
    for path, lines in fuzz.replay_isolated(slow, timeout_s=SLOW_BOUND_S).items():
        results[path] = [line for line in lines if not line.startswith("slow:")]
    failing = {p.name: lines for p, lines in results.items() if lines}
    assert not failing, "\n".join(f"{name}: {' | '.join(lines)}" for name, lines in sorted(failing.items()))
