#!/usr/bin/python3
"""Independent reference for the BERT WordPiece tokenizer (model/tokenizer.c).

Pure Python over `unicodedata` and str methods, written from Hugging Face's
slow BertTokenizer behaviour, not from the C code:

  PreTrainedTokenizer.tokenize with do_lower_case lowers the text one
  character at a time (re.sub with "(.+?)"), so no final-sigma context;
  BasicTokenizer: _clean_text, _tokenize_chinese_chars, NFC of the whole
  text, whitespace_tokenize (str.split), per token lower + strip accents
  (NFD, drop Mn), _run_split_on_punc; WordpieceTokenizer: greedy
  longest-match-first, "##", more than 100 characters -> [UNK];
  build_inputs_with_special_tokens: [CLS] ... [SEP]; truncation to max_length
  cuts the pieces.  load_vocab: lines as text mode reads them, the last line
  of a repeated token wins.

    /usr/bin/python3 tests/reference/wordpiece_reference.py

writes tests/fixtures/tokenizer/vocab.txt (a cased clinical test vocabulary,
with one deliberately repeated token) and golden.json (ids for every case).
With `--check-hf` it also compares against transformers.BertTokenizer, when
that is installed.
"""

import argparse
import json
import os
import random
import sys
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizer")


# ---- the algorithm -------------------------------------------------------------

def load_vocab(path):
    vocab = {}
    with open(path, "r", encoding="utf-8") as f:
        for index, line in enumerate(f.readlines()):
            vocab[line.rstrip("\n")] = index
    return vocab


def cjk(cp):
    ranges = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
              (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
    return any(lo <= cp <= hi for lo, hi in ranges)


def control(ch):
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def space(ch):
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def punct(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def strip_marks(word):
    return "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")


def basic(text, lower, strip_accents, chinese):
    if lower:
        text = "".join(c.lower() if c != "\n" else c for c in text)
    kept = []
    for c in text:
        if ord(c) in (0, 0xFFFD) or control(c):
            continue
        kept.append(" " if space(c) else c)
    text = "".join(kept)
    if chinese:
        text = "".join(" %s " % c if cjk(ord(c)) else c for c in text)
    text = unicodedata.normalize("NFC", text)
    out = []
    for word in text.split():
        if lower:
            word = word.lower()
            if strip_accents is not False:
                word = strip_marks(word)
        elif strip_accents:
            word = strip_marks(word)
        cur = ""
        for c in word:
            if punct(c):
                if cur:
                    out.append(cur)
                out.append(c)
                cur = ""
            else:
                cur += c
        if cur:
            out.append(cur)
    return out


def wordpiece(token, vocab, unk="[UNK]", limit=100):
    if len(token) > limit:
        return [unk]
    pieces = []
    start = 0
    while start < len(token):
        for end in range(len(token), start, -1):
            cand = ("##" if start else "") + token[start:end]
            if cand in vocab:
                pieces.append(cand)
                start = end
                break
        else:
            return [unk]
    return pieces


def encode(text, vocab, lower, strip_accents, chinese, max_length):
    pieces = [p for w in basic(text, lower, strip_accents, chinese) for p in wordpiece(w, vocab)]
    pieces = pieces[:max_length - 2]
    return ["[CLS]"] + pieces + ["[SEP]"]


# ---- the test vocabulary ---------------------------------------------------------

WORDS = """
the of and in with a an is are was were be been no not or to for at on by as from this that there
which within without after before during under over into than then also both either neither
normal abnormal mild mildly moderate moderately severe severely small large dilated dilatation
size sized function functional systolic diastolic global regional segment segments segmental wall
walls thickness thickening thinning motion hypokinesia hypokinetic akinetic akinesia dyskinetic
left right ventricle ventricular ventricles atrium atrial atria septum septal interventricular
interatrial anterior posterior inferior lateral inferolateral anterolateral inferoseptal anteroseptal
basal mid apical apex base cavity chamber chambers valve valves aortic mitral tricuspid pulmonary
pulmonic regurgitation stenosis insufficiency prolapse leaflet leaflets annulus root ascending
descending aorta arch artery arteries coronary vein veins pericardium pericardial effusion
thrombus mass tumour tumor fibrosis scar scarring oedema edema inflammation infarction infarct
ischaemia ischemia ischaemic ischemic viability viable transmural subendocardial subepicardial
epicardial endocardial myocardial myocardium midwall patchy focal diffuse linear nodular
enhancement late gadolinium contrast perfusion rest stress adenosine regadenoson dobutamine
cine mapping native extracellular volume fraction imaging image images sequence sequences study
studies scan scanner performed technique findings impression conclusion comment comments history
indication clinical patient patients male female year years old age man woman
cardiomyopathy cardiomyopathies hypertrophic hypertrophy dilated restrictive arrhythmogenic
amyloidosis amyloid sarcoidosis sarcoid myocarditis pericarditis endocarditis haemochromatosis
hemochromatosis iron overload athlete athletes heart hearts cardiac cardiology congenital
tetralogy repaired repair surgery surgical graft bypass stent stents device pacemaker defibrillator
obstruction outflow tract gradient flow velocity peak mean maximum minimum maximal measured
measures measurement measurements consistent keeping suggestive suggest suggests likely unlikely
possible possibly probable probably compatible typical atypical pattern distribution involvement
evidence significant significantly preserved reduced impaired increased decreased elevated raised
borderline upper lower limit limits range within due secondary primary chronic acute recent
follow up recommended recommend recommendation correlation correlate further assessment
ejection end stroke output index indexed body surface area mass volumes volume
trabeculation noncompaction non compaction apical ballooning takotsubo
chest pain troponin dyspnoea dyspnea breathlessness palpitations syncope murmur
sinus rhythm fibrillation flutter tachycardia bradycardia heart rate
dr reader report reports signed electronically date approx vs e g i
one two three four five six seven eight nine ten
good quality limited artefact artifact breath hold holding gating poor
Löffler café naïve über façade résumé coöperate Ångström Ärzte Straße
μ β α γ δ σ ς Σ
""".split()

CAPITALISED = """
The No Normal Mild Moderate Severe Left Right There This Impression Findings Conclusion
Technique History Indication Clinical Patient Scan Study Cine Perfusion Late Preserved
Reduced Dilated Asymmetric Subepicardial Mid Follow Electronically Dr Reader Chest Good
Löffler Café Ångström Greek German Istanbul Nam Viet Việt Qué Sí
""".split()

ACRONYMS = """
LV RV LA RA LVEF RVEF LGE HCM DCM ARVC LVNC LVOT RVOT ECV SSFP STIR MRI CMR CT ECG ICD
CRT MOLLI ShMOLLI EDV ESV SV EF CO CI EDVi ESVi RVEDVi RVESVi LVEDVi LVESVi BSA SAX
LAX IMPRESSION FINDINGS TECHNIQUE CLINICAL HISTORY RECOMMENDATIONS NAD T1 T2 T2 AHA
""".split()

UNITS = "mm cm ml mL m2 ms kg mmol bpm T s min g L Hz sec % °C".split()

PIECES = """
##s ##es ##ed ##ing ##ly ##al ##ic ##ical ##ous ##ation ##ations ##ity ##ial ##ar ##ies ##er
##ers ##ment ##ments ##ness ##ive ##able ##ible ##ist ##ism ##ize ##ise ##ized ##ised ##y
##itis ##osis ##pathy ##pathies ##cardial ##cardium ##graphy ##gram ##scopy ##ectomy ##plasty
##trophy ##trophic ##tonic ##kinetic ##kinesia ##septal ##lateral ##apical ##basal
##EF ##olin ##ium ##inium ##um ##ol ##in ##ine ##ide ##ate ##ane
##VEF ##V ##R ##E ##F ##i ##I ##D ##M ##C ##G ##T ##L ##A ##S ##O ##N ##H
##mm ##cm ##ml ##ms ##kg ##bpm ##T ##m ##m2 ##L
##0 ##1 ##2 ##3 ##4 ##5 ##6 ##7 ##8 ##9 ##00 ##50 ##25
##a ##b ##c ##d ##e ##f ##g ##h ##i ##j ##k ##l ##m ##n ##o ##p ##q ##r ##s ##t ##u ##v ##w ##x ##y ##z
##ö ##é ##ï ##ü ##ç ##å ##ä ##ß ##μ ##β ##α ##σ ##ς ##ệ ##ậ ##ü
gad gado cardio myo peri endo epi sub trans hyper hypo inter intra non para post pre pseudo
##butrol ##terate ##linium ##pentetate ##phenomenon
gadobutrol gadoterate
""".split()

NUMBERS = ("0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 25 30 32 35 38 40 42 45 50 55 "
           "58 60 62 65 70 72 75 80 90 100 120 142 150 200 1000 1050 2024").split()

# Characters that appear standalone in BERT vocabularies.
CHARS = ([chr(c) for c in range(33, 127)] +
         list("¡¢£¥§©«®°±²³µ¶·¹º»¼½¾¿×÷ßàáâãäåæçèéêëìíîïðñòóôõöøùúûüýþÿ") +
         list("ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÐÑÒÓÔÕÖØÙÚÛÜÝÞ") +
         list("αβγδεζηθικλμνξοπρστυφχψωςΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩάέ") +
         list("–—‘’“”„…•′″€™←→≤≥±") +
         list("心肌病扩张型심근병증") +
         ["ı", "ǆ", "ﬁ", "\u0307", "\u0301", "😀"])


def build_vocab():
    tokens = ["[PAD]"] + ["[unused%d]" % i for i in range(100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    seen = set(tokens)

    def add(tok):
        if tok not in seen:
            seen.add(tok)
            tokens.append(tok)

    for c in CHARS:
        add(c)
    for c in CHARS:
        if not punct(c):
            add("##" + c)
    for group in (NUMBERS, UNITS, ACRONYMS, WORDS, CAPITALISED, PIECES):
        for w in group:
            add(w)
    # Lower- and upper-case variants, and piece forms of whole words, as a
    # trained vocabulary has them.
    for w in WORDS:
        add(w.capitalize())
        if len(w) > 3:
            add("##" + w)
    for w in WORDS[:300]:
        add(w.upper())
    # Subwords of long words so that words outside the list still split.
    for w in WORDS:
        if len(w) >= 9:
            add(w[:4])
            add(w[:6])
            add("##" + w[4:])
            add("##" + w[6:])
    # A repeated token: the later line must win (load_vocab fills a dict).
    tokens.append("mm")
    return tokens


# ---- the cases -------------------------------------------------------------------

LONG_IMPRESSION = (
    "IMPRESSION: 1. Moderately dilated LV (LVEDVi 142 ml/m2) with globally reduced systolic "
    "function, LVEF 32%. 2. Mid-wall LGE in the basal to mid inferoseptal segments (approx. 19 mm "
    "in length), in keeping with non-ischaemic DCM; no subendocardial or transmural infarct pattern. "
    "3. Native T1 1050 ms and ECV 32 % are elevated, suggesting diffuse fibrosis. 4. RV normal size, "
    "RVEF 55%. 5. Mild functional mitral regurgitation. 6. Small pericardial effusion (max 5 mm), no "
    "pericardial thickening. Follow-up CMR in 6–12 months is recommended; correlation with ECG and "
    "family history advised. Scan performed at 1.5 T with gadobutrol 0.1 mmol/kg; good image quality.")

SENTENCES = [
    ("clinical_1", "Normal LV size and systolic function, LVEF 62%."),
    ("clinical_2", "Mid-wall LGE in the basal inferolateral segment, consistent with non-ischaemic cardiomyopathy."),
    ("clinical_3", "Asymmetric septal hypertrophy (max 19 mm) in keeping with HCM; no LVOT obstruction at rest."),
    ("clinical_4", "RV dilated (RVEDVi 142 ml/m2), RVEF 38%."),
    ("clinical_5", "Scan performed at 1.5 T with gadolinium (gadobutrol 0.1 mmol/kg)."),
    ("clinical_6", "Subepicardial enhancement of the basal inferolateral wall, in keeping with myocarditis."),
    ("clinical_7", "No evidence of amyloidosis, sarcoidosis or haemochromatosis. T2* 32 ms."),
    ("clinical_8", "IMPRESSION:\n1. Normal biventricular size and function.\n2. No LGE.\n"),
    ("long_impression", LONG_IMPRESSION),
    ("report_block", "CARDIAC MRI REPORT\r\nLV: EDV 150 ml, EF 58 %.\r\n\r\nIMPRESSION:\r\n\t1. Preserved systolic function."),
    ("numbers", "32% 19 mm 1.5 T 3.0T 120bpm 72 bpm 0.1 mmol/kg 1050ms"),
    ("ranges", "LVEF 15-40, 15–40, 15—40 and 15 to 40 %"),
    ("dates", "Study date: 2024-03-15 12:30:45, follow up 6/12."),
    ("abbrev", "e.g. i.e. vs. approx. Dr. O'Brien's report (cf. p. 2)."),
    ("apostrophes", "patient’s ‘single’ “double” „German“ «guillemets»"),
    ("slashes", "LV/RV, T1/T2, and/or ml/m2 C:\\reports\\cmr.txt"),
    ("brackets", "(LVEF 45%) [RV 50%] {x} <tag>"),
    ("ascii_symbols", "$100 ~ 5^2 `code` |pipe| @home #1 a+b=c _under_ 50% & more!?"),
    ("unicode_punct", "Ellipsis… em—dash ¿Qué? ¡Sí! bullet • prime 5′ section §2 ¶"),
    ("symbols", "± 5 °C, ≥ 50%, ≤ 3, × 2, ÷, ™ © ® € £ ←→"),
    ("accents_loffler", "Löffler endocarditis suspected."),
    ("accents_cafe", "Patient drank café au lait; naïve coöperate façade résumé über."),
    ("accents_decomposed", "Lo\u0308ffler cafe\u0301 A\u030angstro\u0308m"),
    ("accents_caps", "ÅNGSTRÖM Ärzte STRASSE Straße STRAẞE"),
    ("greek", "T2 mapping µ 55 ms, β-blocker, α and γ, Δ 5, σοφία ΣΟΦΙΑ ΟΔΟΣ Σ ΑΣ."),
    ("greek_accents", "ά έ ή ί ό ύ ώ ΐ ΰ"),
    ("cjk", "心肌病 cardiomyopathy 扩张型心肌病LV"),
    ("cjk_compat", "\uf900\uf901 compat \U0002f800"),
    ("cjk_ext_f", "a\U0002ceb0b extension F not split"),
    ("hangul", "심근병증 heart"),
    ("hangul_jamo", "\u1109\u1175\u11b7 \u1100\u1161\u11a8 \u1100\u1161"),
    ("emoji", "Good study 👍🏽 overall 😀!"),
    ("emoji_zwj", "👨\u200d⚕\ufe0f doctor"),
    ("keycap", "1\ufe0f\u20e3 step"),
    ("unassigned", "a\u0378b \ue000 private \U0001faf8 new"),
    ("tabs_newlines", "LV\tRV\nLA\r\nRA\rAo  \t \n end"),
    ("control_chars", "LV\x00 EF\x07 normal\x1b[0m \x7f\x85done"),
    ("format_chars", "LV\u200bEF cardio\u00admyopathy \u200e\u200fmark \ufeffbom"),
    ("replacement", "LV\ufffdEF \ufffd"),
    ("nbsp", "LVEF\u00a055%\u2009narrow\u202fnnbsp\u3000ideo"),
    ("line_separators", "LV\u2028EF\u2029RV\x1cfs\x1dgs"),
    ("fullwidth", "ＬＶＥＦ　５５％ （ｍａｘ）"),
    ("ligature", "ﬁbrosis ﬂow"),
    ("vietnamese", "Việt Nam tiếng Việt"),
    ("ordering", "a\u0323\u0302 a\u0302\u0323 e\u0301\u0301 \u0301abc"),
    ("singletons", "10 \u2126, 300 \u212a, 5 \u212b, why\u037e x\u0387y"),
    ("turkish", "İstanbul İ ı I DİYARBAKIR"),
    ("titlecase", "Ǆ ǅ ǆ ǈ"),
    ("sigma", "Σ ΑΣ. ΑΣΑ ΑΣ'Α ς"),
    ("arabic", "قلب قَلْب"),
    ("devanagari", "हृदय रोग"),
    ("thai", "หัวใจ"),
    ("mixed_case", "HCM hcm Hcm hCM LVEF lvef Lvef"),
    ("subwords", "cardiomyopathies hypertrophied myocarditis pericarditis gadoterate cardiomyocytes"),
    ("unknown", "xyzzy qwfp zzz Zyxwv"),
    ("special_literal", "[CLS] text [SEP] [UNK] [MASK]"),
    ("hashes", "#3 ##EF ## #"),
    ("url", "https://example.org/cmr?id=12&x=y mail: dr.reader@example.org"),
    ("long_100", "a" * 100),
    ("long_101", "a" * 101),
    ("long_120_mixed", "b" * 120 + " LV " + "c" * 60 + "." + "d" * 60),
    ("long_decomposed", "e\u0301" * 60),
    ("long_unknown", "Cardiomyopathy" * 8),
    ("multi_space", "   LV     EF    "),
    ("empty", ""),
    ("whitespace_only", " \t\n \r\n  "),
    ("controls_only", "\x00\x01\x02\u200b"),
    ("single_char", "L"),
    ("punct_only", "...!!!???"),
    ("number_formats", "EF 55.5%, 3,200 ms, 1/2, 10^9/L, 2×10⁹, ½ ¼"),
    ("ohm_units", "R = 10 Ω, µmol/L, μg, °C, m²"),
    # Longer than the C side's stack buffers (256 code points per word).
    ("long_segment", "LV,RV/" * 120 + "café" * 70 + "e\u0301" * 40),
    ("very_long", " ".join([LONG_IMPRESSION] * 5)),
]

MAX_LENGTH_CASES = [
    ("long_impression", 16),
    ("long_impression", 2),
    ("clinical_1", 3),
    ("clinical_1", 13),  # exactly the untruncated length
    ("long_impression", 512),
    ("very_long", 512),
    ("very_long", 100),
]

# Random strings over characters where the steps interact: marks of several
# combining classes, Hangul jamo and syllables, CJK, case pairs with special
# lowering, singletons, separators, controls, punctuation, vocabulary words.
RANDOM_POOL = (
    list("aAeEiIoOsSlLvVfF019 .,-/%()'") +
    ["\u0300", "\u0301", "\u0302", "\u0308", "\u0323", "\u0327", "\u031b", "\u0345", "\u0307",
     "\u05b0", "\u0e31", "\u093c", "\u094d", "\u3099", "\u1dce", "\u0f72", "\u0f71", "\u0f80",
     "\u1100", "\u1112", "\u1161", "\u1175", "\u11a7", "\u11a8", "\u11c2", "\uac00", "\uac1c", "\ud7a3",
     "\u4e00", "\u5fc3", "\uf900", "\U0002f800", "\U0002ceb0", "\u3400",
     "\u0130", "\u0131", "\u03a3", "\u03c2", "\u1e9e", "\u00df", "\u01c5", "\u0345", "\u1f88",
     "\u2126", "\u212a", "\u212b", "\u037e", "\u0387", "\u0344", "\u0958", "\u2000",
     "\u00a0", "\u2028", "\u2029", "\u3000", "\u200b", "\u00ad", "\x00", "\x1c", "\x85", "\ufffd",
     "\t", "\n", "\r", "\u0378", "\ue000", "\U0001f600", "\u20e3", "\ufe0f",
     "\u2013", "\u2019", "\u00b5", "\u00b0", "\u00e9", "\u00c5", "\u00f6", "\u1ec7",
     "LV", "EF", "gad", "olin", "ium", "mm", "Löffler", "café", "cardio"])


def random_text(rng):
    return "".join(rng.choice(RANDOM_POOL) for _ in range(rng.randrange(1, 40)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check-hf", action="store_true", help="compare with transformers.BertTokenizer")
    ap.add_argument("--random", type=int, default=40, help="random cases (default 40)")
    ap.add_argument("--out", default=os.path.join(OUT, "golden.json"),
                    help="where to write the cases (for a larger differential run: "
                         "CMR_TOKENIZER_GOLDEN=that-file test_tokenizer)")
    args = ap.parse_args()
    check_hf = args.check_hf
    os.makedirs(OUT, exist_ok=True)
    vocab_path = os.path.join(OUT, "vocab.txt")
    with open(vocab_path, "w", encoding="utf-8", newline="\n") as f:
        for tok in build_vocab():
            f.write(tok + "\n")
    vocab = load_vocab(vocab_path)
    texts = dict(SENTENCES)
    assert len(texts) == len(SENTENCES), "duplicate case name"

    cases = []

    def case(name, text, lower, strip, chinese=True, max_length=512):
        toks = encode(text, vocab, lower, strip, chinese, max_length)
        cases.append({
            "name": name, "text": text,
            "do_lower_case": lower, "strip_accents": strip,
            "tokenize_chinese_chars": chinese, "max_length": max_length,
            "tokens": toks, "ids": [vocab[t] for t in toks],
        })

    for name, text in SENTENCES:
        case(name + "/cased", text, False, None)
        case(name + "/uncased", text, True, None)
    for name, text in SENTENCES:
        if any(ord(c) > 0x7F for c in text):
            case(name + "/cased_strip", text, False, True)
            case(name + "/uncased_keep_accents", text, True, False)
    for name in ("cjk", "cjk_compat", "cjk_ext_f", "hangul"):
        case(name + "/no_chinese", texts[name], False, None, chinese=False)
    for name, n in MAX_LENGTH_CASES:
        case("%s/max_length_%d" % (name, n), texts[name], False, None, max_length=n)
        case("%s/uncased_max_length_%d" % (name, n), texts[name], True, None, max_length=n)
    rng = random.Random(20240315)
    for k in range(args.random):
        text = random_text(rng)
        lower = bool(k & 1)
        strip = (None, True, False)[k // 2 % 3]
        case("random_%d" % k, text, lower, strip, chinese=k % 7 != 6)

    if check_hf:
        cross_check(vocab_path, cases)

    with open(args.out, "w", encoding="utf-8") as f:
        # One case per line: reviewable diffs, half the size of indented JSON.
        head = {"generator": "tests/reference/wordpiece_reference.py",
                "python": sys.version.split()[0], "unicode": unicodedata.unidata_version,
                "vocab": "vocab.txt", "vocab_lines": len(build_vocab())}
        f.write(json.dumps(head, ensure_ascii=True)[:-1] + ', "cases": [\n')
        f.write(",\n".join(json.dumps(c, ensure_ascii=True) for c in cases))
        f.write("\n]}\n")
    print("%d tokens in vocab.txt, %d cases in golden.json" % (len(build_vocab()), len(cases)))


def cross_check(vocab_path, cases):
    try:
        from transformers import BertTokenizer
    except ImportError:
        print("transformers is not installed: no cross-check", file=sys.stderr)
        return
    bad = 0
    for c in cases:
        tok = BertTokenizer(vocab_path, do_lower_case=c["do_lower_case"],
                            strip_accents=c["strip_accents"],
                            tokenize_chinese_chars=c["tokenize_chinese_chars"])
        if any(s in c["text"] for s in ("[CLS]", "[SEP]", "[UNK]", "[PAD]", "[MASK]")):
            continue  # special-token strings: HF matches them, we do not (documented)
        got = tok(c["text"], truncation=True, max_length=c["max_length"])["input_ids"]
        if got != c["ids"]:
            bad += 1
            print("HF differs on %s: %s vs %s" % (c["name"], got, c["ids"]), file=sys.stderr)
    print("cross-check against transformers: %d of %d differ" % (bad, len(cases)), file=sys.stderr)


if __name__ == "__main__":
    main()
