"""Imprint reader (on sample pills), matcher and fusion contracts.

Reader tests use crops of three sample photos chosen because the default reader reads them
(checked by eye and by the reader): the printed "MYLAN 6440" capsule (00378-6440-01), the
debossed "93 / 900" tablet (00093-0900-01, left side) and that tablet's blank back (right
side), which is the sample's only side without an imprint. The default reader loads its
models once for the whole module (about a second); each read takes 0.1-0.5 s on 2 cores.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rxvision.imprint import (
    ImprintIndex,
    ImprintReaderError,
    ImprintToken,
    fuse,
    fusion_decider,
    get_reader,
    normalize_imprint,
    normalize_token,
    read_groups,
    read_imprint,
)

PRINTED = ("00378-6440-01", (16, 6, 297, 98))  # MYLAN 6440 printed on the capsule's cap
DEBOSSED = ("00093-0900-01", (15, 38, 152, 174))  # "93" above the score, "900" below
BLANK = ("00093-0900-01", (161, 38, 298, 174))  # the same tablet's plain back


def crop(sample_dir: Path, which: tuple[str, tuple[int, int, int, int]]) -> Image.Image:
    with Image.open(sample_dir / "images" / f"{which[0]}.jpg") as im:
        return im.convert("RGB").crop(which[1])


def read_texts(read) -> set[str]:
    """Normalised tokens read, with the other-way-up readings."""
    out = {normalize_token(t.text) for t in read.confident()}
    return out | {normalize_token(t.alternative[0]) for t in read.confident() if t.alternative}


# --- reader ------------------------------------------------------------------------------


def test_reader_reads_printed_imprint(sample_dir: Path) -> None:
    pill = crop(sample_dir, PRINTED)
    read = read_imprint(pill)
    assert {"MY1AN", "6440"} <= read_texts(read)  # MYLAN, normalised (L -> 1)
    assert read.reader == "rapidocr"
    assert read.source_size == pill.size and read.scale > 1.0  # upsampled, size recorded
    assert read.elapsed_ms > 0
    assert all(t.angle in (0, 90, 180, 270) for t in read.tokens)
    assert "6440" in read.text()


def test_reader_reads_turned_crops(sample_dir: Path) -> None:
    """The text is found and read whichever way the pill lies."""
    pill = crop(sample_dir, PRINTED)
    for turn in (90, 180):
        assert "6440" in read_texts(read_imprint(pill.rotate(turn, expand=True)))


def test_reader_reads_debossed_imprint(sample_dir: Path) -> None:
    texts = read_texts(read_imprint(crop(sample_dir, DEBOSSED)))
    assert {"93", "900"} <= texts


def test_reader_blank_side_reads_nothing_confident(sample_dir: Path) -> None:
    read = read_imprint(crop(sample_dir, BLANK))
    assert read.confident() == ()
    assert read.text() == ""


def test_reader_errors() -> None:
    with pytest.raises(ImprintReaderError, match="unknown imprint reader"):
        get_reader("nope")
    with pytest.raises(TypeError, match="PIL image"):
        read_imprint(np.zeros((8, 8, 3), dtype=np.uint8))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="enhance mode"):
        read_imprint(Image.new("RGB", (32, 32)), enhance_modes=("sharpen",))


def test_tesseract_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from rxvision.imprint import _tesseract

    monkeypatch.setattr(_tesseract.shutil, "which", lambda _name: None)
    with pytest.raises(ImprintReaderError, match="apt-get install tesseract-ocr"):
        _tesseract.TesseractBackend()


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract-ocr not installed")
def test_tesseract_reader_reads_printed_imprint(sample_dir: Path) -> None:
    read = read_imprint(crop(sample_dir, PRINTED), "tesseract", enhance_modes=("none",))
    assert "6440" in read_texts(read)
    assert read.reader == "tesseract"


# --- matcher -----------------------------------------------------------------------------

LIBRARY = [
    "M;411",  # 0
    "TEVA;5770",  # 1
    "",  # 2: no imprint
    "MYLAN;6440;MYLAN;6440",  # 3
    "LCI;1789",  # 4
    "93;900",  # 5
    "93;600",  # 6 a look-alike of 5
    "KU;485;100;mg",  # 7
    "LCI;1788",  # 8 a look-alike of 4
    "M;EC;10",  # 9
]


@pytest.fixture(scope="module")
def index() -> ImprintIndex:
    return ImprintIndex(LIBRARY)


def test_normalise_folds_case_separators_and_confusions() -> None:
    assert normalize_token("lci") == normalize_token("LC1") == "1C1"
    assert normalize_token("M-B.0") == normalize_token("mb0") == normalize_token("M8O")
    assert normalize_imprint("MYLAN;6440;MYLAN;6440") == ("6440", "MY1AN")
    assert normalize_imprint("S Z/G") == ("2", "5", "6")
    assert normalize_imprint("") == ()


def test_matcher_ranks_the_right_pill(index: ImprintIndex) -> None:
    assert int(np.argmax(index.llr(["M", "411"]))) == 0
    assert int(np.argmax(index.llr([("6440", 0.99), ("MYLAN", 0.9)]))) == 3


def test_matcher_handles_confusions_and_side_order(index: ImprintIndex) -> None:
    reference = index.llr(["TEVA", "5770"])
    np.testing.assert_allclose(index.llr(["5770", "TEVA"]), reference)  # side order
    np.testing.assert_allclose(index.llr(["5770 teva"]), reference)  # one line, any case
    assert int(np.argmax(index.llr(["TEVA", "577O"]))) == 1  # O read for 0
    assert int(np.argmax(index.llr(["lc1", "I789"]))) == 4  # 1/I/L


def test_matcher_tolerates_one_misread_character(index: ImprintIndex) -> None:
    llr = index.llr(["MYLAN", "6441"])  # last digit misread
    assert int(np.argmax(llr)) == 3
    llr = index.llr(["KU", "486"])
    assert int(np.argmax(llr)) == 7
    # an exact read beats a one-character neighbour: 1789 for entry 4, not 8
    llr = index.llr(["LCI", "1789"])
    assert llr[4] > llr[8]
    # two neighbours swapped count as one misread, as they do for a typed search
    llr = index.llr(["TEVA", "5707"])
    assert int(np.argmax(llr)) == 1 and llr[1] > index.llr(["TEVA", "7057"])[1]


def test_matcher_run_together_and_turned_reads(index: ImprintIndex) -> None:
    assert int(np.argmax(index.llr(["KU", "100mg", "485"]))) == 7  # "100;mg" as one token
    turned = ImprintToken("006", 0.99, 180, alternative=("900", 0.98))  # 900 upside down
    llr = index.llr([ImprintToken("93", 1.0), turned])
    assert int(np.argmax(llr)) == 5
    assert read_groups([turned])[0].variants == ("006", "900")


def test_empty_read_is_no_evidence(index: ImprintIndex) -> None:
    assert not index.llr([]).any()
    assert not index.llr([("M", 0.1)]).any()  # below the confidence floor
    bonus = index.llr([], absent_bonus=0.2)
    assert bonus[2] == pytest.approx(0.2) and np.count_nonzero(bonus) == 1


def test_unexplained_token_costs_little(index: ImprintIndex) -> None:
    clean = index.llr(["M", "411"])
    noisy = index.llr(["M", "411", "QXW"])  # a token no pill carries
    np.testing.assert_allclose(noisy, clean)
    assert int(np.argmax(index.llr(["M", "411", "TEVA"]))) == 0


def test_unread_imprint_token_costs_little(index: ImprintIndex) -> None:
    llr = index.llr(["411"])  # the "M" was missed
    assert int(np.argmax(llr)) == 0
    assert llr[0] - np.median(llr) > 1.0


def test_index_scales_to_thousands_of_entries() -> None:
    rng = np.random.default_rng(0)
    alphabet = list("ABCDEFGHJKMNPRTUVWXY0123456789")
    imprints = [
        ";".join("".join(rng.choice(alphabet, size=rng.integers(1, 6))) for _ in range(3))
        for _ in range(4000)
    ]
    imprints[1234] = "ZQ;7781"
    index = ImprintIndex(imprints)
    llr = index.llr(["ZQ", "7781"])
    assert llr.shape == (4000,) and np.isfinite(llr).all()
    assert int(np.argmax(llr)) == 1234


# --- fusion ------------------------------------------------------------------------------


def photo_log_probs(probs: list[float]) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    return np.log(p / p.sum())


def test_imprint_overrides_a_look_alike(index: ImprintIndex) -> None:
    # the photo prefers entry 6 (93 600) over its look-alike 5 (93 900); the read says 900
    probs = np.full(len(LIBRARY), 0.01)
    probs[6], probs[5] = 0.6, 0.3
    photo = photo_log_probs(list(probs))
    llr = index.llr([("93", 0.99), ("900", 0.97)])
    fused = fuse(photo, llr)
    assert np.exp(fused).sum() == pytest.approx(1.0)
    assert int(np.argmax(photo)) == 6 and int(np.argmax(fused)) == 5
    decision = fusion_decider(photo, llr)
    assert decision.changed and decision.decided_by == "imprint"
    assert decision.appearance_margin + decision.imprint_margin == pytest.approx(
        fused[decision.fused_top] - fused[decision.runner_up]
    )


def test_the_decision_concerns_the_answer_typed_facts_leave(index: ImprintIndex) -> None:
    """The read says 900 (entry 5) over the photo's 93 600 (entry 6), but the colour the user
    typed rules entry 5 out: the answer is the photo's own, so the imprint decided nothing."""
    from rxvision.logmath import log_softmax

    probs = np.full(len(LIBRARY), 0.01)
    probs[6], probs[5] = 0.6, 0.3
    photo = photo_log_probs(list(probs))
    llr = index.llr([("93", 0.99), ("900", 0.97)])
    typed_colour = np.zeros(len(LIBRARY))
    typed_colour[5] = -20.0  # entry 5 is another colour than the one typed

    def rerank(log_probs: np.ndarray) -> np.ndarray:
        return log_softmax(log_probs + typed_colour)

    assert fusion_decider(photo, llr).changed  # without the typed colour the read moves it
    decision = fusion_decider(photo, llr, rerank=rerank)
    assert decision.fused_top == 6 and decision.photo_top == 6
    assert not decision.changed and decision.decided_by == "appearance"


def test_empty_read_leaves_the_ranking_unchanged(index: ImprintIndex) -> None:
    photo = photo_log_probs([0.05, 0.3, 0.02, 0.2, 0.1, 0.08, 0.1, 0.05, 0.05, 0.05])
    fused = fuse(photo, index.llr([]))
    np.testing.assert_allclose(fused, photo, atol=1e-12)
    decision = fusion_decider(photo, index.llr([]))
    assert decision.decided_by == "appearance" and not decision.changed


def test_appearance_decides_when_the_read_agrees_weakly(index: ImprintIndex) -> None:
    photo = photo_log_probs([0.9] + [0.1 / 9] * 9)
    decision = fusion_decider(photo, index.llr([("M", 0.6)]))  # "M" is on entries 0 and 9
    assert decision.fused_top == 0 and decision.decided_by == "appearance"


def test_fusion_checks_shapes_and_batches() -> None:
    with pytest.raises(ValueError, match="same library entries"):
        fuse(np.zeros(3), np.zeros(4))
    photo = np.log(np.full((2, 3), 1 / 3))
    out = fuse(photo, np.array([0.0, 2.0, 0.0]))
    assert out.shape == (2, 3) and np.allclose(np.exp(out).sum(axis=1), 1.0)
    np.testing.assert_allclose(fuse(photo[0], np.array([0.0, 2.0, 0.0]), weight=0.0), photo[0])


def _read(*tokens: tuple[str, float]):
    from rxvision.imprint import ImprintRead

    return ImprintRead(tuple(ImprintToken(t, c) for t, c in tokens), "test", (100, 60), 1.0,
                       5.0)


def test_a_partial_read_names_the_siblings_it_does_not_tell_apart() -> None:
    """"TV" of "TV 7678" fits TV 7677 as well: the photo alone then decides between them, so
    the answer is held to the photo's own threshold."""
    from rxvision.identify.imprint_evidence import ImprintEvidence

    labels = ["tv-7677", "tv-7678", "m-411", "93-900", "tv-7678-repack", "tv-7679-blue"]
    white_oval = (frozenset({"WHITE"}), "OVAL")
    looks = [white_oval, white_oval, (frozenset({"WHITE"}), "ROUND"), None, white_oval,
             (frozenset({"BLUE"}), "OVAL")]
    evidence = ImprintEvidence(["TV;7677", "TV;7678", "M;411", "93;900", "7678;TV", "TV;7679"],
                               weight=2.0, labels=labels, looks=looks)
    photo = photo_log_probs([0.01, 0.70, 0.18, 0.09, 0.01, 0.01])
    fused, info = evidence.apply(photo, [_read(("TV", 0.95))])
    assert labels[int(np.argmax(fused))] == "tv-7678" and np.exp(fused.max()) > 0.9
    # the repackager's same text is the same pill, not a sibling to rule out; the blue
    # one is told apart by its colour
    assert info["also_fits"] == [{"label": "tv-7677", "imprint": "TV;7677"}]
    assert info["photo_confidence"] == pytest.approx(0.70)
    assert evidence.holds_back(info, 0.9) and not evidence.holds_back(info, 0.6)
    _, whole = evidence.apply(photo, [_read(("TV", 0.95), ("7678", 0.9))])
    assert whole["also_fits"] == [] and not evidence.holds_back(whole, 0.9)
    _, faint = evidence.apply(photo, [_read(("TV", 0.4))])  # weighed, so it is reported
    assert faint["read"] == "TV" and faint["also_fits"]
    _, nothing = evidence.apply(photo, [])
    assert nothing["also_fits"] == [] and not evidence.holds_back(nothing, 0.9)
    with pytest.raises(ValueError, match="2 labels and 6 looks for 6 imprints"):
        ImprintEvidence(["TV;7677"] * 6, labels=labels[:2], looks=looks)
