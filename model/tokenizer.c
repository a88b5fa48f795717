/* BERT WordPiece tokenizer: the steps and the deliberate differences from
 * Hugging Face are listed in tokenizer.h.
 *
 * Encoding streams over the input once: UTF-8 is decoded and cleaned code
 * point by code point into a word buffer; each whitespace-delimited word is
 * then normalised (NFC, lower, strip accents — skipped when the word is
 * plain enough for them to be no-ops), split on punctuation and matched
 * against the vocabulary's hash table.  Normalisation is per word because
 * none of it crosses a separator: a space is a starter that composes with
 * nothing, and the generator checks that no mapping yields a separator. */
#include "tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SBASE 0xAC00u
#define LBASE 0x1100u
#define VBASE 0x1161u
#define TBASE 0x11A7u
#define LCOUNT 19u
#define VCOUNT 21u
#define TCOUNT 28u
#define NCOUNT (VCOUNT * TCOUNT)
#define SCOUNT (LCOUNT * NCOUNT)

/* Code points in each of the two stack buffers a word is normalised in;
 * longer words (after lowering x2 or decomposition x4) move to the heap. */
#define STACK_CPS 2048

struct cmr_tokenizer {
    char *blob;          /* every line's text, NUL-terminated, in line order */
    uint32_t *off;       /* n + 1 offsets into blob: token i is blob + off[i] */
    size_t n;            /* lines = ids */
    int32_t *slot_id;    /* open-addressing table of ids, -1 = empty */
    uint32_t *slot_hash; /* low hash bits of the slot's token, to skip most memcmps */
    size_t mask;
    size_t max_token_bytes;
    int32_t cls, sep, unk, pad;
    int lower, strip, chinese;
    size_t max_length;
};

/* ---- Unicode ------------------------------------------------------------- */

static inline unsigned uprop(uint32_t cp)
{
    return cmr_uni_prop_blocks[(size_t)cmr_uni_prop_index[cp / CMR_UNI_BLOCK] * CMR_UNI_BLOCK +
                               cp % CMR_UNI_BLOCK];
}

static inline unsigned uccc(uint32_t cp)
{
    return cmr_uni_ccc_blocks[(size_t)cmr_uni_ccc_index[cp / CMR_UNI_BLOCK] * CMR_UNI_BLOCK +
                              cp % CMR_UNI_BLOCK];
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Index of cp in a sorted table, or -1. */
static long find_cp(const uint32_t *table, size_t n, uint32_t cp)
{
    const uint32_t *hit = bsearch(&cp, table, n, sizeof *table, cmp_u32);
    return hit ? (long)(hit - table) : -1;
}

/* BasicTokenizer._is_chinese_char: CJK Unified Ideographs and extensions
 * A-E, compatibility ideographs; exactly BERT's ranges (not extension F or G). */
static int is_cjk(uint32_t cp)
{
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
           (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
           (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

/* Append the lowercase of cp (1 or 2 code points); returns the count. */
static size_t lower_cp(uint32_t cp, uint32_t *out)
{
    if (!(uprop(cp) & CMR_UNI_LOWER)) {
        out[0] = cp;
        return 1;
    }
    long k = find_cp(cmr_uni_lower_cp, cmr_uni_lower_count, cp);
    if (k < 0) { /* cannot happen with consistent tables */
        out[0] = cp;
        return 1;
    }
    uint32_t v = cmr_uni_lower_val[k];
    if (!(v & 0x80000000u)) {
        out[0] = v;
        return 1;
    }
    size_t len = v & 7, off = (v & 0x7FFFFFFFu) >> 3;
    memcpy(out, cmr_uni_lower_pool + off, len * sizeof *out);
    return len;
}

/* Full canonical decomposition of in[0..n) into out, canonically ordered;
 * returns the length (at most 4n). */
static size_t nfd(const uint32_t *in, size_t n, uint32_t *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = in[i];
        if (cp - SBASE < SCOUNT) {
            uint32_t s = cp - SBASE;
            out[o++] = LBASE + s / NCOUNT;
            out[o++] = VBASE + s % NCOUNT / TCOUNT;
            if (s % TCOUNT)
                out[o++] = TBASE + s % TCOUNT;
            continue;
        }
        long k = (uprop(cp) & CMR_UNI_DECOMP) ? find_cp(cmr_uni_decomp_cp, cmr_uni_decomp_count, cp)
                                               : -1;
        if (k < 0) {
            out[o++] = cp;
            continue;
        }
        size_t len = cmr_uni_decomp_val[k] & 7, off = cmr_uni_decomp_val[k] >> 3;
        memcpy(out + o, cmr_uni_decomp_pool + off, len * sizeof *out);
        o += len;
    }
    /* Canonical ordering: a stable sort of each run of non-starters by
     * combining class (runs are a few marks long: insertion sort). */
    for (size_t i = 1; i < o; i++) {
        unsigned c = uccc(out[i]);
        if (c == 0)
            continue;
        uint32_t cp = out[i];
        size_t j = i;
        while (j > 0) {
            unsigned p = uccc(out[j - 1]);
            if (p <= c) /* includes p == 0: a starter ends the run */
                break;
            out[j] = out[j - 1];
            j--;
        }
        out[j] = cp;
    }
    return o;
}

/* The primary composite of a + b, or 0. */
static uint32_t compose_pair(uint32_t a, uint32_t b)
{
    if (a - LBASE < LCOUNT && b - VBASE < VCOUNT)
        return SBASE + ((a - LBASE) * VCOUNT + (b - VBASE)) * TCOUNT;
    if (a - SBASE < SCOUNT && (a - SBASE) % TCOUNT == 0 && b - TBASE - 1 < TCOUNT - 1)
        return a + (b - TBASE);
    uint64_t key = (uint64_t)a << 21 | b;
    const uint64_t *hit =
        bsearch(&key, cmr_uni_comp_pair, cmr_uni_comp_count, sizeof key, cmp_u64);
    return hit ? cmr_uni_comp_cp[hit - cmr_uni_comp_pair] : 0;
}

/* NFC of in[0..n) into out; returns the length (at most 4n: decomposition
 * comes first, and excluded compositions stay decomposed). */
static size_t nfc(const uint32_t *in, size_t n, uint32_t *out)
{
    size_t m = nfd(in, n, out);
    size_t o = 0, starter = SIZE_MAX;
    unsigned last = 0; /* class of the last character kept after the starter */
    for (size_t i = 0; i < m; i++) {
        uint32_t cp = out[i];
        unsigned c = uccc(cp);
        /* Not blocked: next to the starter, or every mark in between has a
         * lower class (after ordering, the last one has the highest). */
        if (starter != SIZE_MAX && (o == starter + 1 || last < c) &&
            (uprop(cp) & CMR_UNI_COMPOSE2)) {
            uint32_t comp = compose_pair(out[starter], cp);
            if (comp) {
                out[starter] = comp;
                continue;
            }
        }
        if (c == 0)
            starter = o;
        last = c;
        out[o++] = cp;
    }
    return o;
}

/* ---- UTF-8 ---------------------------------------------------------------- */

/* Decode one code point strictly (RFC 3629: no overlongs, surrogates or
 * values past U+10FFFF, as Python's decoder); returns its length, 0 if invalid. */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    uint32_t v;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        v = c & 0x0F;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        v = c & 0x07;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    v = v << 6 | (s[1] & 0x3F);
    for (size_t i = 2; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = v << 6 | (s[i] & 0x3F);
    }
    *cp = v;
    return len;
}

static size_t utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- vocabulary ------------------------------------------------------------- */

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static uint64_t fnv(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * FNV_PRIME;
    return h;
}

static size_t token_len(const cmr_tokenizer *t, int32_t id)
{
    return t->off[id + 1] - t->off[id] - 1;
}

/* Slot of "##"-prefixed (cont) or plain s[0..n): its id there, or the empty
 * slot where it would go (*id = -1). */
static size_t probe(const cmr_tokenizer *t, int cont, const char *s, size_t n, int32_t *id)
{
    uint64_t h = fnv(cont ? fnv(FNV_OFFSET, "##", 2) : FNV_OFFSET, s, n);
    size_t want = n + (cont ? 2 : 0);
    for (size_t i = (size_t)h & t->mask;; i = (i + 1) & t->mask) {
        int32_t cand = t->slot_id[i];
        if (cand < 0) {
            *id = -1;
            return i;
        }
        if (t->slot_hash[i] != (uint32_t)h || token_len(t, cand) != want)
            continue;
        const char *tok = t->blob + t->off[cand];
        if (cont && (tok[0] != '#' || tok[1] != '#'))
            continue;
        if (memcmp(tok + (cont ? 2 : 0), s, n) == 0) {
            *id = cand;
            return i;
        }
    }
}

static int32_t lookup(const cmr_tokenizer *t, int cont, const char *s, size_t n)
{
    int32_t id;
    if (n + (cont ? 2 : 0) > t->max_token_bytes)
        return -1;
    probe(t, cont, s, n, &id);
    return id;
}

void cmr_tokenizer_options_init(cmr_tokenizer_options *opts)
{
    opts->do_lower_case = 1;
    opts->strip_accents = -1;
    opts->tokenize_chinese_chars = 1;
    opts->max_length = CMR_TOKENIZER_MAX_LENGTH_DEFAULT;
}

static int32_t special(cmr_tokenizer *t, const char *name, int required, int *err)
{
    int32_t id = cmr_tokenizer_id(t, name);
    if (id < 0 && required && !*err)
        *err = cmr_fail(CMR_EFORMAT, "vocabulary has no %s token", name);
    return id;
}

int cmr_tokenizer_from_memory(const char *vocab, size_t len, const cmr_tokenizer_options *opts,
                              cmr_tokenizer **out)
{
    cmr_tokenizer_options o;
    int err = 0;
    *out = NULL;
    if (opts)
        o = *opts;
    else
        cmr_tokenizer_options_init(&o);
    if (!o.max_length)
        o.max_length = CMR_TOKENIZER_MAX_LENGTH_DEFAULT;
    if ((o.do_lower_case != 0 && o.do_lower_case != 1) ||
        (o.strip_accents < -1 || o.strip_accents > 1) ||
        (o.tokenize_chinese_chars != 0 && o.tokenize_chinese_chars != 1))
        return cmr_fail(CMR_EINVAL, "tokenizer options: flags must be 0 or 1 (strip_accents also -1)");
    if (o.max_length < 2)
        return cmr_fail(CMR_EINVAL, "tokenizer options: max_length %zu leaves no room for [CLS] and [SEP]",
                        o.max_length);
    if (!vocab && len)
        return cmr_fail(CMR_EINVAL, "tokenizer: NULL vocabulary");
    if (len >= UINT32_MAX - 1)
        return cmr_fail(CMR_EFORMAT, "vocabulary of %zu bytes is too large", len);

    cmr_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return cmr_fail(CMR_ENOMEM, "tokenizer: out of memory");
    t->lower = o.do_lower_case;
    /* HF: strip when strip_accents is True, or None and lower-casing. */
    t->strip = o.strip_accents == 1 || (o.strip_accents == -1 && o.do_lower_case);
    t->chinese = o.tokenize_chinese_chars;
    t->max_length = o.max_length;

    /* Lines as Python's text mode reads them: \n, \r\n and a lone \r end a
     * line; a last line without an end still counts. */
    size_t lines = 0;
    for (size_t i = 0; i < len; i++)
        if (vocab[i] == '\n' || (vocab[i] == '\r' && (i + 1 == len || vocab[i + 1] != '\n')))
            lines++;
    if (len && vocab[len - 1] != '\n' && vocab[len - 1] != '\r')
        lines++;
    if (!lines) {
        err = cmr_fail(CMR_EFORMAT, "vocabulary is empty");
        goto fail;
    }
    if (lines > INT32_MAX) {
        err = cmr_fail(CMR_EFORMAT, "vocabulary has too many lines");
        goto fail;
    }
    size_t slots = 16;
    while (slots < 2 * lines)
        slots *= 2;
    t->blob = malloc(len + 1);
    t->off = malloc((lines + 1) * sizeof *t->off);
    t->slot_id = malloc(slots * sizeof *t->slot_id);
    t->slot_hash = malloc(slots * sizeof *t->slot_hash);
    if (!t->blob || !t->off || !t->slot_id || !t->slot_hash) {
        err = cmr_fail(CMR_ENOMEM, "tokenizer: out of memory for %zu tokens", lines);
        goto fail;
    }
    memset(t->slot_id, 0xFF, slots * sizeof *t->slot_id);
    t->mask = slots - 1;

    size_t pos = 0, b = 0;
    for (size_t line = 0; line < lines; line++) {
        size_t start = pos;
        while (pos < len && vocab[pos] != '\n' && vocab[pos] != '\r')
            pos++;
        size_t n = pos - start;
        for (size_t i = 0; i < n;) {
            uint32_t cp;
            size_t k = utf8_decode((const unsigned char *)vocab + start + i, n - i, &cp);
            if (!k || cp == 0) {
                err = cmr_fail(CMR_EFORMAT, "vocabulary line %zu: %s at byte %zu", line + 1,
                               k ? "NUL character" : "invalid UTF-8", i);
                goto fail;
            }
            i += k;
        }
        if (pos < len)
            pos += (vocab[pos] == '\r' && pos + 1 < len && vocab[pos + 1] == '\n') ? 2 : 1;
        t->off[line] = (uint32_t)b;
        memcpy(t->blob + b, vocab + start, n);
        t->blob[b + n] = '\0';
        b += n + 1;
        t->off[line + 1] = (uint32_t)b;
        if (n > t->max_token_bytes)
            t->max_token_bytes = n;
        t->n = line + 1;
        /* A repeated token maps to its last line (load_vocab fills a dict). */
        int32_t id;
        size_t slot = probe(t, 0, t->blob + t->off[line], n, &id);
        t->slot_id[slot] = (int32_t)line;
        t->slot_hash[slot] = (uint32_t)fnv(FNV_OFFSET, t->blob + t->off[line], n);
    }

    t->unk = special(t, "[UNK]", 1, &err);
    t->cls = special(t, "[CLS]", 1, &err);
    t->sep = special(t, "[SEP]", 1, &err);
    t->pad = special(t, "[PAD]", 0, &err);
    if (err)
        goto fail;
    *out = t;
    return 0;
fail:
    cmr_tokenizer_close(t);
    return err;
}

int cmr_tokenizer_open(const char *vocab_path, const cmr_tokenizer_options *opts,
                       cmr_tokenizer **out)
{
    *out = NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    FILE *f = fopen(vocab_path, "rb");
    if (!f)
        return cmr_fail(errno == ENOENT ? CMR_ENOTFOUND : CMR_EIO, "%s: %s", vocab_path,
                        strerror(errno));
    for (;;) {
        if (n == cap) {
            cap = cap ? 2 * cap : 1 << 18;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return cmr_fail(CMR_ENOMEM, "%s: out of memory", vocab_path);
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return cmr_fail(CMR_EIO, "%s: read error", vocab_path);
    }
    int rc = cmr_tokenizer_from_memory(buf, n, opts, out);
    free(buf);
    if (rc)
        return cmr_fail_context(rc, "%s: ", vocab_path);
    return 0;
}

void cmr_tokenizer_close(cmr_tokenizer *t)
{
    if (!t)
        return;
    free(t->blob);
    free(t->off);
    free(t->slot_id);
    free(t->slot_hash);
    free(t);
}

size_t cmr_tokenizer_vocab_size(const cmr_tokenizer *t) { return t->n; }
int32_t cmr_tokenizer_cls_id(const cmr_tokenizer *t) { return t->cls; }
int32_t cmr_tokenizer_sep_id(const cmr_tokenizer *t) { return t->sep; }
int32_t cmr_tokenizer_unk_id(const cmr_tokenizer *t) { return t->unk; }
int32_t cmr_tokenizer_pad_id(const cmr_tokenizer *t) { return t->pad; }
size_t cmr_tokenizer_max_length(const cmr_tokenizer *t) { return t->max_length; }

int32_t cmr_tokenizer_id(const cmr_tokenizer *t, const char *token)
{
    size_t n = strlen(token);
    return n > t->max_token_bytes ? -1 : lookup(t, 0, token, n);
}

const char *cmr_tokenizer_token(const cmr_tokenizer *t, int32_t id)
{
    return id >= 0 && (size_t)id < t->n ? t->blob + t->off[id] : NULL;
}

/* ---- encoding ----------------------------------------------------------------- */

typedef struct encoder {
    const cmr_tokenizer *t;
    int32_t *ids;
    size_t cap;
    size_t n;      /* ids so far, [CLS] included (may exceed cap: counting) */
    size_t limit;  /* ids before [SEP]: max_length - 1 */
    uint32_t *buf[2];
    size_t buf_cap; /* code points in each buffer */
    int heap;
    int err;        /* CMR_ENOMEM from reserve */
    uint32_t stack[2][STACK_CPS];
} encoder;

static void emit(encoder *e, int32_t id)
{
    if (e->n < e->limit) {
        if (e->n < e->cap)
            e->ids[e->n] = id;
        e->n++;
    }
}

/* WordPiece of one punctuation-free piece (or a lone punctuation mark). */
static void wordpiece(encoder *e, const uint32_t *cps, size_t n)
{
    const cmr_tokenizer *t = e->t;
    if (n > CMR_TOKENIZER_MAX_WORD_CHARS) {
        emit(e, t->unk);
        return;
    }
    char bytes[CMR_TOKENIZER_MAX_WORD_CHARS * 4];
    size_t at[CMR_TOKENIZER_MAX_WORD_CHARS + 1]; /* byte offset of each character */
    int32_t sub[CMR_TOKENIZER_MAX_WORD_CHARS];
    size_t nsub = 0;
    at[0] = 0;
    for (size_t i = 0; i < n; i++)
        at[i + 1] = at[i] + utf8_encode(cps[i], bytes + at[i]);
    for (size_t start = 0; start < n;) {
        int32_t id = -1;
        size_t end = n;
        for (; end > start; end--) {
            id = lookup(t, start > 0, bytes + at[start], at[end] - at[start]);
            if (id >= 0)
                break;
        }
        if (id < 0) { /* the whole piece is one [UNK], matched parts dropped */
            emit(e, t->unk);
            return;
        }
        sub[nsub++] = id;
        start = end;
    }
    for (size_t i = 0; i < nsub; i++)
        emit(e, sub[i]);
}

/* Room for need code points in both buffers, keeping their contents. */
static int reserve(encoder *e, size_t need)
{
    if (need <= e->buf_cap)
        return 0;
    size_t cap = e->buf_cap;
    while (cap < need)
        cap *= 2;
    uint32_t *a = malloc(cap * sizeof *a), *b = malloc(cap * sizeof *b);
    if (!a || !b) {
        free(a);
        free(b);
        return e->err = cmr_fail(CMR_ENOMEM, "tokenizer: out of memory for a word of %zu characters",
                                 need);
    }
    memcpy(a, e->buf[0], e->buf_cap * sizeof *a);
    memcpy(b, e->buf[1], e->buf_cap * sizeof *b);
    if (e->heap) {
        free(e->buf[0]);
        free(e->buf[1]);
    }
    e->buf[0] = a;
    e->buf[1] = b;
    e->buf_cap = cap;
    e->heap = 1;
    return 0;
}

/* Normalise and tokenize the word in buf[0][0..n); maxcp is its largest code
 * point.  The buffers swap roles at each step (cur: input, 1 - cur: output). */
static int word(encoder *e, size_t n, uint32_t maxcp)
{
    const cmr_tokenizer *t = e->t;
    int cur = 0;
    /* Text below U+0300 is already NFC (the generator checks it). */
    if (maxcp >= 0x300) {
        if (reserve(e, 4 * n))
            return e->err;
        n = nfc(e->buf[cur], n, e->buf[1 - cur]);
        cur = 1 - cur;
        if (t->lower) {
            if (reserve(e, 2 * n))
                return e->err;
            size_t m = 0;
            for (size_t i = 0; i < n; i++)
                m += lower_cp(e->buf[cur][i], e->buf[1 - cur] + m);
            n = m;
            cur = 1 - cur;
        }
    }
    /* Nothing below U+00C0 decomposes or is a mark. */
    if (t->strip && maxcp >= 0xC0) {
        if (reserve(e, 4 * n))
            return e->err;
        uint32_t *d = e->buf[1 - cur];
        size_t m = nfd(e->buf[cur], n, d), k = 0;
        for (size_t i = 0; i < m; i++)
            if (!(uprop(d[i]) & CMR_UNI_MN))
                d[k++] = d[i];
        n = k;
        cur = 1 - cur;
    }
    const uint32_t *w = e->buf[cur];
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        if (uprop(w[i]) & CMR_UNI_PUNCT) {
            if (i > run)
                wordpiece(e, w + run, i - run);
            wordpiece(e, w + i, 1);
            run = i + 1;
        }
    }
    if (n > run)
        wordpiece(e, w + run, n - run);
    return 0;
}

int cmr_tokenizer_encode(const cmr_tokenizer *t, const char *utf8, size_t len, int32_t *ids,
                         size_t cap, size_t *n_ids)
{
    *n_ids = 0;
    if (!utf8 && len)
        return cmr_fail(CMR_EINVAL, "tokenizer: NULL text");
    if (!ids && cap)
        return cmr_fail(CMR_EINVAL, "tokenizer: NULL ids with capacity %zu", cap);
    encoder enc, *e = &enc; /* 16 KiB of stack: no allocation for ordinary text */
    e->t = t;
    e->ids = ids;
    e->cap = cap;
    e->n = 0;
    e->limit = t->max_length - 1;
    e->buf[0] = e->stack[0];
    e->buf[1] = e->stack[1];
    e->buf_cap = STACK_CPS;
    e->heap = 0;
    e->err = 0;
    emit(e, t->cls);

    int rc = 0;
    size_t n = 0;         /* code points in the current word */
    uint32_t maxcp = 0;   /* largest of them */
    const unsigned char *s = (const unsigned char *)utf8;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t k = utf8_decode(s + i, len - i, &cp);
        if (!k) {
            rc = cmr_fail(CMR_EINVAL, "tokenizer: invalid UTF-8 at byte %zu", i);
            goto done;
        }
        i += k;
        if (e->n >= e->limit) /* truncated: only validating the rest */
            continue;
        unsigned p = uprop(cp);
        if (cp == 0 || cp == 0xFFFD || (p & CMR_UNI_CONTROL))
            continue;
        int alone = t->chinese && cp >= 0x3400 && is_cjk(cp);
        if ((p & (CMR_UNI_WS | CMR_UNI_PYSPACE)) || alone) {
            if (n && (rc = word(e, n, maxcp)))
                goto done;
            n = 0;
            maxcp = 0;
            if (!alone)
                continue;
        }
        if ((rc = reserve(e, n + 2)))
            goto done;
        size_t m = 1;
        if (t->lower)
            m = lower_cp(cp, e->buf[0] + n);
        else
            e->buf[0][n] = cp;
        for (size_t j = n; j < n + m; j++)
            if (e->buf[0][j] > maxcp)
                maxcp = e->buf[0][j];
        n += m;
        if (alone) {
            if ((rc = word(e, n, maxcp)))
                goto done;
            n = 0;
            maxcp = 0;
        }
    }
    if (n && e->n < e->limit && (rc = word(e, n, maxcp)))
        goto done;
    e->limit++; /* room for [SEP] */
    emit(e, t->sep);
    *n_ids = e->n;
    if (e->n > cap)
        rc = cmr_fail(CMR_EINVAL, "tokenizer: %zu ids do not fit in %zu", e->n, cap);
done:
    if (e->heap) {
        free(e->buf[0]);
        free(e->buf[1]);
    }
    return rc;
}
