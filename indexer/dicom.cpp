/* DICOM through DCMTK, behind the C interface of cmr_dicom.h.
 *
 * Every entry point catches C++ exceptions (DCMTK allocates with plain new)
 * and turns each failure into a CMR_E* code with a message naming the file
 * and the element or property at fault.  DCMTK's own log output is captured
 * per thread instead of going to stderr, so that its diagnosis (e.g. which
 * element runs past the end of the file) can be quoted in our message; set
 * CMR_DICOM_LOG=1 in the environment to leave DCMTK's logging untouched.
 *
 * Assumes a little-endian host: DCMTK hands OW pixel data over in host order
 * and the sample unpacking below reads it byte-wise in that order. */
#include <dcmtk/config/osconfig.h>

#include <dcmtk/dcmdata/dccodec.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcdict.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>
#include <dcmtk/dcmsr/dsrdoc.h>
#include <dcmtk/oflog/appender.h>
#include <dcmtk/oflog/oflog.h>
#include <dcmtk/oflog/spi/logevent.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <sstream>
#include <string>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#include "cmr_dicom.h"
#include "jpegls_decode.h"

/* Decoded samples per call; bounds what a tiny compressed file can make us
 * allocate from its Rows x Columns x NumberOfFrames (the fuzz build lowers it). */
#ifndef CMR_DICOM_MAX_SAMPLES
#define CMR_DICOM_MAX_SAMPLES (1ull << 28)
#endif
/* Values above this are left on disk when only the header is wanted. */
static const Uint32 HEADER_MAX_READ = 4096;
static const long MAX_FRAMES = 1L << 20;

namespace {
struct header_del { void operator()(cmr_dicom_header *h) const { cmr_dicom_header_free(h); } };
struct free_del { void operator()(void *p) const { free(p); } };
} // namespace

/* ---- DCMTK log capture ------------------------------------------------------------ */

static thread_local std::string t_dcmtk_error, t_dcmtk_warning;

namespace {
class CaptureAppender : public dcmtk::log4cplus::Appender {
  public:
    ~CaptureAppender() override { destructorImpl(); }
    void close() override {}

  protected:
    void append(const dcmtk::log4cplus::spi::InternalLoggingEvent &ev) override
    {
        /* The first error explains a failure best; later ones are consequences. */
        if (ev.getLogLevel() >= dcmtk::log4cplus::ERROR_LOG_LEVEL) {
            if (t_dcmtk_error.empty())
                t_dcmtk_error = ev.getMessage().c_str();
        } else {
            t_dcmtk_warning = ev.getMessage().c_str();
        }
    }
};
} // namespace

static std::once_flag g_init_once;

static void global_init()
{
    if (!getenv("CMR_DICOM_LOG")) {
        OFLogger l = OFLog::getLogger("dcmtk");
        l.removeAllAppenders();
        l.addAppender(dcmtk::log4cplus::SharedAppenderPtr(new CaptureAppender));
        l.setAdditivity(false);
        l.setLogLevel(OFLogger::WARN_LOG_LEVEL);
    }
    (void)dcmDataDict.isDictionaryLoaded(); /* load it here, not inside the first timed read */
}

static void begin_call()
{
    std::call_once(g_init_once, global_init);
    t_dcmtk_error.clear();
    t_dcmtk_warning.clear();
}

/* " (DCMTK: ...)" or "" */
static std::string dcmtk_said()
{
    const std::string &m = t_dcmtk_error.empty() ? t_dcmtk_warning : t_dcmtk_error;
    return m.empty() ? std::string() : " (DCMTK: " + m + ")";
}

/* Registered under a lock on every pixel read rather than once: registration
 * is a no-op when already done, and this way a component that deregisters
 * DCMTK's codecs (the phantom's cleanup) cannot leave us without decoders. */
static std::mutex g_codec_lock;

static void ensure_codecs()
{
    std::lock_guard<std::mutex> lk(g_codec_lock);
    DJDecoderRegistration::registerCodecs();
    DJLSDecoderRegistration::registerCodecs();
    DcmRLEDecoderRegistration::registerCodecs();
}

/* ---- failures ----------------------------------------------------------------------- */

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static int failf(int code, const char *path, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return cmr_fail(code, "%s: %s", path, msg);
}

static std::string tag_name(const DcmTagKey &k)
{
    DcmTag t(k);
    char buf[96];
    snprintf(buf, sizeof buf, "%s (%04X,%04X)", t.getTagName(), k.getGroup(), k.getElement());
    return buf;
}

#define CMR_GUARD(path, body)                                                                   \
    try {                                                                                       \
        body                                                                                    \
    } catch (const std::bad_alloc &) {                                                          \
        return failf(CMR_ENOMEM, path ? path : "(null)", "out of memory");                       \
    } catch (const std::exception &e) {                                                         \
        return failf(CMR_EFORMAT, path ? path : "(null)", "unexpected error: %s", e.what());     \
    } catch (...) {                                                                             \
        return failf(CMR_EFORMAT, path ? path : "(null)", "unexpected error");                   \
    }

/* ---- probe -------------------------------------------------------------------------- */

static unsigned le16(const unsigned char *p) { return (unsigned)p[0] | (unsigned)p[1] << 8; }
static uint32_t le32(const unsigned char *p) { return le16(p) | (uint32_t)le16(p + 2) << 16; }

static bool known_vr(const unsigned char *v)
{
    static const char vrs[] = "AEASATCSDADSDTFLFDISLOLTOBODOFOLOVOWPNSHSLSQSSSTSVTMUCUIULUNURUSUTUV";
    for (const char *p = vrs; *p; p += 2)
        if (v[0] == (unsigned char)p[0] && v[1] == (unsigned char)p[1])
            return true;
    return false;
}

/* A file without preamble starts with an element of group 0002 (meta) or
 * 0008 (identifying, the first group of nearly every old data set). */
static bool plausible_first_element(const unsigned char *b, size_t n)
{
    if (n < 8)
        return false;
    unsigned group = le16(b), elem = le16(b + 2);
    if (group != 0x0002 && group != 0x0008)
        return false;
    if (elem > 0x9FFF)
        return false;
    if (known_vr(b + 4))
        return true;
    /* Implicit VR: a 32-bit length, even and modest for the first element. */
    uint32_t len = le32(b + 4);
    return len % 2 == 0 && len <= 1024;
}

static bool probe_bytes(const unsigned char *b, size_t n)
{
    if (n >= 132 && memcmp(b + 128, "DICM", 4) == 0)
        return true;
    return plausible_first_element(b, n);
}

static int not_dicom(const char *path)
{
    return failf(CMR_EFORMAT, path, "not DICOM: no \"DICM\" at offset 128 and no group 0002/0008 element at offset 0");
}

extern "C" int cmr_dicom_probe(const char *path)
{
    if (!path) {
        cmr_fail(CMR_EINVAL, "cmr_dicom_probe: no path");
        return 0;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        failf(CMR_EIO, path, "cannot open: %s", strerror(errno));
        return 0;
    }
    unsigned char b[132];
    size_t n = fread(b, 1, sizeof b, f);
    int err = ferror(f);
    fclose(f);
    if (err) {
        failf(CMR_EIO, path, "cannot read: %s", strerror(errno));
        return 0;
    }
    if (probe_bytes(b, n))
        return 1;
    not_dicom(path);
    return 0;
}

/* ---- loading and attribute access ------------------------------------------------------ */

/* Files up to this size are read with one read(2), probed and parsed from
 * memory: DCMTK's file stream goes through stdio, whose locked
 * fread/ftello/feof per element, with a separate open for the probe, were a
 * sixth of the archive scan's CPU.  Larger files keep the file stream, which
 * leaves values above max_read on disk until they are asked for (a 1 GB
 * multi-frame object must not be read whole for its header).  DCMTK's buffer
 * stream takes even lengths only; an odd-sized file is damaged anyway and
 * goes the file-stream way, which words its truncation as before. */
static const off_t MEMORY_PARSE_MAX = 8 << 20;

namespace {
struct file_bytes {
    std::unique_ptr<unsigned char, free_del> data;
    size_t size = 0;    /* bytes in data */
    bool whole = false; /* data is the whole file, of even length */
};
} // namespace

/* The whole file when it can be parsed from memory, else its first 132
 * bytes (for the probe); fails only when the file cannot be opened or read. */
static int read_file_bytes(const char *path, file_bytes &fb)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return failf(CMR_EIO, path, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return failf(CMR_EIO, path, "cannot stat: %s", strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return failf(CMR_EINVAL, path, "not a regular file");
    }
    fb.whole = st.st_size > 0 && st.st_size <= MEMORY_PARSE_MAX && st.st_size % 2 == 0;
    size_t want = fb.whole ? (size_t)st.st_size : 132;
    fb.data.reset((unsigned char *)malloc(want));
    if (!fb.data) {
        close(fd);
        return failf(CMR_ENOMEM, path, "out of memory for %zu bytes", want);
    }
    while (fb.size < want) {
        ssize_t n = read(fd, fb.data.get() + fb.size, want - fb.size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            return failf(CMR_EIO, path, "cannot read: %s", strerror(e));
        }
        if (n == 0)
            break;
        fb.size += (size_t)n;
    }
    close(fd);
    if (fb.whole && fb.size != want) /* shrank under us: let DCMTK's file stream see what is there */
        fb.whole = false;
    return 0;
}

static OFCondition parse_bytes(const char *path, const file_bytes &fb, DcmFileFormat &ff, Uint32 max_read)
{
    if (!fb.whole)
        return ff.loadFile(OFFilename(path), EXS_Unknown, EGL_noChange, max_read, ERM_autoDetect);
    /* A buffer stream cannot make a factory for deferred values, so DCMTK
     * copies every value during read(): the bytes are not needed afterwards. */
    DcmInputBufferStream in;
    in.setBuffer(fb.data.get(), (offile_off_t)fb.size);
    in.setEos();
    ff.transferInit();
    OFCondition c = ff.read(in, EXS_Unknown, EGL_noChange, max_read);
    ff.transferEnd();
    in.releaseBuffer();
    return c;
}

/* is_dicom: when given, a file the probe refuses is not an error: *is_dicom
 * is set to false and 0 returned with ff untouched (the archive scan tells
 * DICOM from reports this way, reading each file once). */
static int load(const char *path, DcmFileFormat &ff, Uint32 max_read, bool *is_dicom = nullptr)
{
    if (!path)
        return cmr_fail(CMR_EINVAL, "no path given");
    file_bytes fb;
    int rc = read_file_bytes(path, fb);
    if (rc)
        return rc;
    if (is_dicom)
        *is_dicom = probe_bytes(fb.data.get(), fb.size);
    if (is_dicom && !*is_dicom)
        return 0;
    if (!is_dicom && !probe_bytes(fb.data.get(), fb.size))
        return not_dicom(path);
    OFCondition c = parse_bytes(path, fb, ff, max_read);
    /* Damaged files are rare: read one again through the file stream, whose
     * conditions the diagnosis below knows (the buffer stream reports a
     * premature end as an invalid stream, without the element inserted). */
    if (c.bad() && fb.whole)
        c = ff.loadFile(OFFilename(path), EXS_Unknown, EGL_noChange, max_read, ERM_autoDetect);
    if (c.good() && ff.getDataset()->card() == 0)
        return failf(CMR_EFORMAT, path, "the data set is empty");
    if (c.good())
        return 0;
    if (c == EC_StreamNotifyClient) {
        /* DCMTK inserts the element it is reading before reading its value,
         * so the last element found is the one the file ends inside. */
        DcmObject *last = nullptr;
        DcmStack stack;
        for (DcmItem *it : {(DcmItem *)ff.getMetaInfo(), (DcmItem *)ff.getDataset()}) {
            stack.clear();
            while (it && it->nextObject(stack, OFTrue).good())
                last = stack.top();
        }
        std::string where = last ? "in or after " + tag_name(last->getTag()) : "in the meta header";
        struct stat st;
        long long size = stat(path, &st) == 0 ? (long long)st.st_size : -1;
        return failf(CMR_EFORMAT, path, "truncated: the file (%lld bytes) ends %s%s", size,
                     where.c_str(), dcmtk_said().c_str());
    }
    return failf(CMR_EFORMAT, path, "cannot parse: %s%s", c.text(), dcmtk_said().c_str());
}

/* DCMTK searches an item's element list linearly, and a header read looks up
 * some 60 top-level attributes: the top-level data set gets a sorted index
 * for the duration of one read (a fifth of the header time otherwise). */
namespace {
struct item_index {
    DcmItem *item = nullptr;
    std::vector<std::pair<Uint32, DcmElement *>> v;
};
static thread_local item_index t_index;

struct index_scope {
    explicit index_scope(DcmItem *it)
    {
        t_index.v.clear();
        for (DcmObject *o = it->nextInContainer(nullptr); o; o = it->nextInContainer(o))
            t_index.v.emplace_back(key(o->getTag()), OFstatic_cast(DcmElement *, o));
        std::sort(t_index.v.begin(), t_index.v.end());
        t_index.item = it;
    }
    ~index_scope()
    {
        t_index.item = nullptr;
        t_index.v.clear();
    }
    static Uint32 key(const DcmTagKey &k) { return (Uint32)k.getGroup() << 16 | k.getElement(); }
};
} // namespace

static DcmElement *element(DcmItem *it, const DcmTagKey &k)
{
    DcmElement *e = nullptr;
    if (!it)
        return nullptr;
    if (it == t_index.item) {
        auto want = std::make_pair(index_scope::key(k), (DcmElement *)nullptr);
        auto pos = std::lower_bound(t_index.v.begin(), t_index.v.end(), want);
        e = pos != t_index.v.end() && pos->first == want.first ? pos->second : nullptr;
    } else if (it->findAndGetElement(k, e).bad()) {
        e = nullptr;
    }
    return e && e->ident() != EVR_SQ ? e : nullptr;
}

/* All values joined by '\', with the padding DCMTK normalises away. */
static bool get_str(DcmItem *it, const DcmTagKey &k, OFString &out)
{
    DcmElement *e = element(it, k);
    return e && e->getOFStringArray(out, OFTrue).good();
}

static void copy_str(char *dst, size_t cap, const OFString &s)
{
    size_t n = 0;
    for (const char *p = s.c_str(); *p && n + 1 < cap; p++)
        dst[n++] = ((unsigned char)*p < 0x20 || *p == 0x7f) ? '?' : *p; /* no terminal escapes in messages */
    dst[n] = '\0';
}

static void str_field(DcmItem *it, const DcmTagKey &k, char *dst, size_t cap)
{
    OFString s;
    if (get_str(it, k, s))
        copy_str(dst, cap, s);
}

/* Value `pos` of a numeric attribute of any VR; false if absent, unparsable or not finite. */
static bool get_num(DcmItem *it, const DcmTagKey &k, unsigned long pos, double &v)
{
    DcmElement *e = element(it, k);
    if (!e || pos >= e->getVM())
        return false;
    bool ok;
    switch (e->ident()) {
    case EVR_FD: case EVR_OD: { Float64 d; ok = e->getFloat64(d, pos).good(); v = d; break; }
    case EVR_FL: case EVR_OF: { Float32 f; ok = e->getFloat32(f, pos).good(); v = f; break; }
    case EVR_US: { Uint16 u; ok = e->getUint16(u, pos).good(); v = u; break; }
    case EVR_SS: { Sint16 s; ok = e->getSint16(s, pos).good(); v = s; break; }
    case EVR_UL: { Uint32 u; ok = e->getUint32(u, pos).good(); v = u; break; }
    case EVR_SL: { Sint32 s; ok = e->getSint32(s, pos).good(); v = s; break; }
    default: {
        OFString s;
        OFBool parsed = OFFalse;
        ok = e->getOFString(s, pos, OFTrue).good() && !s.empty();
        if (ok) /* locale-independent, unlike strtod */
            v = OFStandard::atof(s.c_str(), &parsed);
        ok = ok && parsed;
    }
    }
    return ok && std::isfinite(v);
}

static bool get_int(DcmItem *it, const DcmTagKey &k, long &out)
{
    double v;
    if (!get_num(it, k, 0, v) || v < -2147483648.0 || v > 2147483647.0)
        return false;
    out = (long)v;
    return true;
}

static double num_or(DcmItem *it, const DcmTagKey &k, double dflt)
{
    double v;
    return get_num(it, k, 0, v) ? v : dflt;
}

static int int_or(DcmItem *it, const DcmTagKey &k, int dflt)
{
    long v;
    return get_int(it, k, v) ? (int)v : dflt;
}

static bool get_nums(DcmItem *it, const DcmTagKey &k, int n, double *out)
{
    for (int i = 0; i < n; i++)
        if (!get_num(it, k, (unsigned long)i, out[i]))
            return false;
    return true;
}

static DcmItem *seq_item(DcmItem *it, const DcmTagKey &seq, long i = 0)
{
    DcmItem *r = nullptr;
    if (!it || it->findAndGetSequenceItem(seq, r, (signed long)i).bad())
        return nullptr;
    return r;
}

/* A functional group macro for one frame: the per-frame item overrides the shared one. */
static DcmItem *fg(DcmItem *per_frame, DcmItem *shared, const DcmTagKey &macro)
{
    DcmItem *m = seq_item(per_frame, macro);
    return m ? m : seq_item(shared, macro);
}

/* Encapsulated pixel data has an undefined length (also when the transfer
 * syntax is one DCMTK does not know and so reads as native). */
static DcmElement *pixel_element(DcmItem *ds, const DcmTagKey &k)
{
    DcmElement *e = element(ds, k);
    return e && (e->getLength() > 0 || (k == DCM_PixelData && e->getLengthField() == DCM_UndefinedLength)) ? e : nullptr;
}

/* ---- header ------------------------------------------------------------------------- */

namespace {
struct header_ctx {
    const char *path;
    DcmFileFormat *ff;
    DcmDataset *ds;
    DcmItem *shared;                 /* Shared Functional Groups item or null */
    DcmSequenceOfItems *per_frame;   /* Per-frame Functional Groups or null */
    E_TransferSyntax xfer;
    DcmElement *pixels;              /* the pixel data element, any of the three kinds */
    bool encapsulated;               /* pixels is a sequence of fragments */
    bool ts_unknown;                 /* the meta header names a syntax DCMTK does not know */
};
} // namespace

static bool item_nonempty(DcmItem *it) { return it && it->card() > 0; }

static void read_identity(header_ctx &c, cmr_dicom_header *h)
{
    DcmDataset *ds = c.ds;
    DcmItem *meta = c.ff->getMetaInfo();
    str_field(ds, DCM_SOPClassUID, h->sop_class_uid, sizeof h->sop_class_uid);
    if (!h->sop_class_uid[0])
        str_field(meta, DCM_MediaStorageSOPClassUID, h->sop_class_uid, sizeof h->sop_class_uid);
    str_field(ds, DCM_SOPInstanceUID, h->sop_instance_uid, sizeof h->sop_instance_uid);
    if (!h->sop_instance_uid[0])
        str_field(meta, DCM_MediaStorageSOPInstanceUID, h->sop_instance_uid, sizeof h->sop_instance_uid);
    str_field(ds, DCM_StudyInstanceUID, h->study_uid, sizeof h->study_uid);
    str_field(ds, DCM_SeriesInstanceUID, h->series_uid, sizeof h->series_uid);
    str_field(ds, DCM_FrameOfReferenceUID, h->frame_of_reference_uid, sizeof h->frame_of_reference_uid);

    /* The meta header names the syntax even when DCMTK does not know it. */
    OFString ts;
    if (get_str(meta, DCM_TransferSyntaxUID, ts) && !ts.empty()) {
        copy_str(h->transfer_syntax_uid, sizeof h->transfer_syntax_uid, ts);
        DcmXfer x(ts.c_str());
        c.ts_unknown = x.getXfer() == EXS_Unknown;
        copy_str(h->transfer_syntax_name, sizeof h->transfer_syntax_name,
                 c.ts_unknown ? OFString("unknown transfer syntax") : OFString(x.getXferName()));
    } else {
        DcmXfer x(c.xfer);
        copy_str(h->transfer_syntax_uid, sizeof h->transfer_syntax_uid, x.getXferID());
        copy_str(h->transfer_syntax_name, sizeof h->transfer_syntax_name, x.getXferName());
    }
    str_field(ds, DCM_Modality, h->modality, sizeof h->modality);
    str_field(ds, DCM_Manufacturer, h->manufacturer, sizeof h->manufacturer);
    str_field(ds, DCM_ManufacturerModelName, h->model_name, sizeof h->model_name);
    str_field(ds, DCM_InstitutionName, h->institution, sizeof h->institution);
    str_field(ds, DCM_StudyDescription, h->study_description, sizeof h->study_description);
    str_field(ds, DCM_SeriesDescription, h->series_description, sizeof h->series_description);
    str_field(ds, DCM_ProtocolName, h->protocol_name, sizeof h->protocol_name);
    str_field(ds, DCM_ImageType, h->image_type, sizeof h->image_type);
    str_field(ds, DCM_AccessionNumber, h->accession_number, sizeof h->accession_number);
    str_field(ds, DCM_PatientID, h->patient_id, sizeof h->patient_id);
    str_field(ds, DCM_PatientSex, h->patient_sex, sizeof h->patient_sex);
    str_field(ds, DCM_PatientBirthDate, h->patient_birth_date, sizeof h->patient_birth_date);
    str_field(ds, DCM_PatientAge, h->patient_age, sizeof h->patient_age);
    str_field(ds, DCM_StudyDate, h->study_date, sizeof h->study_date);
    str_field(ds, DCM_SeriesDate, h->series_date, sizeof h->series_date);
    str_field(ds, DCM_AcquisitionDate, h->acquisition_date, sizeof h->acquisition_date);
    h->is_structured_report = !strncmp(h->sop_class_uid, "1.2.840.10008.5.1.4.1.1.88.", 27) ||
                              !strcmp(h->modality, "SR");
}

/* Acquisition attributes: top level, else (Enhanced MR) the shared groups or frame 1's. */
static void read_acquisition(header_ctx &c, cmr_dicom_header *h)
{
    DcmDataset *ds = c.ds;
    DcmItem *f0 = c.per_frame ? c.per_frame->getItem(0) : nullptr;
    str_field(ds, DCM_ScanningSequence, h->scanning_sequence, sizeof h->scanning_sequence);
    str_field(ds, DCM_SequenceVariant, h->sequence_variant, sizeof h->sequence_variant);
    str_field(ds, DCM_ScanOptions, h->scan_options, sizeof h->scan_options);
    str_field(ds, DCM_PulseSequenceName, h->pulse_sequence_name, sizeof h->pulse_sequence_name);
    if (!h->image_type[0])
        str_field(fg(f0, c.shared, DCM_MRImageFrameTypeSequence), DCM_FrameType, h->image_type, sizeof h->image_type);

    DcmItem *timing = fg(f0, c.shared, DCM_MRTimingAndRelatedParametersSequence);
    DcmItem *measures = fg(f0, c.shared, DCM_PixelMeasuresSequence);
    DcmItem *echo = fg(f0, c.shared, DCM_MREchoSequence);
    DcmItem *cardiac = fg(f0, c.shared, DCM_CardiacSynchronizationSequence);
    h->field_strength = num_or(ds, DCM_MagneticFieldStrength, 0);
    h->slice_thickness = num_or(ds, DCM_SliceThickness, num_or(measures, DCM_SliceThickness, 0));
    h->spacing_between_slices = num_or(ds, DCM_SpacingBetweenSlices, num_or(measures, DCM_SpacingBetweenSlices, 0));
    h->repetition_time = num_or(ds, DCM_RepetitionTime, num_or(timing, DCM_RepetitionTime, 0));
    h->echo_time = num_or(ds, DCM_EchoTime, num_or(echo, DCM_EffectiveEchoTime, 0));
    h->flip_angle = num_or(ds, DCM_FlipAngle, num_or(timing, DCM_FlipAngle, 0));
    /* Per-frame inversion times stay per frame; only a shared one is the series'. */
    h->has_inversion_time = get_num(ds, DCM_InversionTime, 0, h->inversion_time) ||
                            get_num(seq_item(c.shared, DCM_MRModifierSequence), DCM_InversionTimes, 0, h->inversion_time);
    h->has_pixel_spacing = get_nums(ds, DCM_PixelSpacing, 2, h->pixel_spacing) ||
                           get_nums(measures, DCM_PixelSpacing, 2, h->pixel_spacing);
    h->cardiac_number_of_images = int_or(ds, DCM_CardiacNumberOfImages, 0);
    h->nominal_interval = num_or(ds, DCM_NominalInterval, num_or(cardiac, DCM_RRIntervalTimeNominal, 0));
    h->frame_time = num_or(ds, DCM_FrameTime, 0);
    h->series_number = int_or(ds, DCM_SeriesNumber, 0);
    h->instance_number = int_or(ds, DCM_InstanceNumber, 0);

    DcmItem *rescale = fg(f0, c.shared, DCM_PixelValueTransformationSequence);
    DcmItem *voi = fg(f0, c.shared, DCM_FrameVOILUTSequence);
    h->rescale_slope = num_or(ds, DCM_RescaleSlope, num_or(rescale, DCM_RescaleSlope, 1));
    h->rescale_intercept = num_or(ds, DCM_RescaleIntercept, num_or(rescale, DCM_RescaleIntercept, 0));
    if (h->rescale_slope == 0) /* would flatten the image; treat as absent */
        h->rescale_slope = 1;
    h->window_center = num_or(ds, DCM_WindowCenter, num_or(voi, DCM_WindowCenter, 0));
    h->window_width = num_or(ds, DCM_WindowWidth, num_or(voi, DCM_WindowWidth, 0));
}

/* Rows/Columns/... and the pixel data element, checked against each other. */
static int read_image_pixel(header_ctx &c, cmr_dicom_header *h)
{
    DcmDataset *ds = c.ds;
    h->rows = int_or(ds, DCM_Rows, 0);
    h->columns = int_or(ds, DCM_Columns, 0);
    h->samples_per_pixel = int_or(ds, DCM_SamplesPerPixel, 1);
    h->bits_allocated = int_or(ds, DCM_BitsAllocated, 0);
    h->bits_stored = int_or(ds, DCM_BitsStored, h->bits_allocated);
    h->pixel_representation = int_or(ds, DCM_PixelRepresentation, 0);
    str_field(ds, DCM_PhotometricInterpretation, h->photometric, sizeof h->photometric);

    c.pixels = nullptr;
    for (const DcmTagKey &k : {DCM_PixelData, DCM_FloatPixelData, DCM_DoubleFloatPixelData})
        if (!c.pixels)
            c.pixels = pixel_element(ds, k);
    h->has_pixel_data = c.pixels != nullptr;
    if (!h->has_pixel_data) {
        if (h->rows > 0 || h->columns > 0)
            return failf(CMR_EFORMAT, c.path, "has Rows %d and Columns %d but no Pixel Data (7FE0,0010)", h->rows,
                         h->columns);
        h->frames = 0; /* not an image: SR, presentation state, ... */
        return 0;
    }
    if (h->rows <= 0 || h->columns <= 0)
        return failf(CMR_EFORMAT, c.path, "has Pixel Data but Rows (0028,0010) is %d and Columns (0028,0011) %d",
                     h->rows, h->columns);
    if (h->samples_per_pixel < 1 || h->samples_per_pixel > 4)
        return failf(CMR_EFORMAT, c.path, "SamplesPerPixel (0028,0002) is %d", h->samples_per_pixel);
    if (c.pixels->getTag() == DCM_FloatPixelData || c.pixels->getTag() == DCM_DoubleFloatPixelData) {
        int bits = c.pixels->getTag() == DCM_FloatPixelData ? 32 : 64;
        if (!h->bits_allocated)
            h->bits_allocated = h->bits_stored = bits;
        if (h->bits_allocated != bits)
            return failf(CMR_EFORMAT, c.path, "BitsAllocated (0028,0100) is %d with %s", h->bits_allocated,
                         tag_name(c.pixels->getTag()).c_str());
    }
    if (h->bits_allocated <= 0 || h->bits_allocated > 64 || (h->bits_allocated != 1 && h->bits_allocated % 8))
        return failf(CMR_EFORMAT, c.path, "BitsAllocated (0028,0100) is %d", h->bits_allocated);
    if (h->bits_stored <= 0 || h->bits_stored > h->bits_allocated)
        return failf(CMR_EFORMAT, c.path, "BitsStored (0028,0101) is %d with BitsAllocated %d", h->bits_stored,
                     h->bits_allocated);

    h->frames = 1;
    OFString nf;
    if (get_str(ds, DCM_NumberOfFrames, nf) && !nf.empty()) {
        long n;
        if (!get_int(ds, DCM_NumberOfFrames, n) || n < 1 || n > MAX_FRAMES)
            return failf(CMR_EFORMAT, c.path, "NumberOfFrames (0028,0008) is '%s'", nf.c_str());
        h->frames = (int)n;
    }

    /* Native data must hold every frame; encapsulated data needs a fragment per frame. */
    unsigned long long samples = (unsigned long long)h->rows * (unsigned long long)h->columns *
                                 (unsigned long long)h->frames * (unsigned long long)h->samples_per_pixel;
    bool encapsulated_ts = DcmXfer(c.xfer).isEncapsulated();
    c.encapsulated = c.pixels->getTag() == DCM_PixelData && (encapsulated_ts || c.pixels->getLengthField() == DCM_UndefinedLength);
    if (c.encapsulated && !encapsulated_ts) {
        /* fragments under a syntax DCMTK takes for native: read_pixels refuses them */
    } else if (c.encapsulated) {
        DcmPixelSequence *seq = nullptr;
        DcmPixelData *pd = OFstatic_cast(DcmPixelData *, c.pixels);
        if (pd->getEncapsulatedRepresentation(c.xfer, nullptr, seq).bad() || !seq)
            return failf(CMR_EFORMAT, c.path, "Pixel Data (7FE0,0010) is not encapsulated although the transfer syntax %s is",
                         h->transfer_syntax_name);
        unsigned long fragments = seq->card() ? seq->card() - 1 : 0;
        if (fragments < (unsigned long)h->frames)
            return failf(CMR_EFORMAT, c.path, "Pixel Data (7FE0,0010) has %lu fragments for %d frames", fragments,
                         h->frames);
    } else {
        unsigned long long need = (samples * (unsigned long long)h->bits_allocated + 7) / 8;
        unsigned long long have = c.pixels->getLength();
        if (have < need)
            return failf(CMR_EFORMAT, c.path,
                         "%s holds %llu bytes, Rows %d x Columns %d x %d frame(s) x %d bits needs %llu",
                         tag_name(c.pixels->getTag()).c_str(), have, h->rows, h->columns, h->frames,
                         h->bits_allocated * h->samples_per_pixel, need);
    }
    return 0;
}

/* The values of a multi-valued numeric string, parsed in one pass (per-position
 * access in DCMTK rescans the string, quadratic over thousands of frames). */
static std::vector<double> all_nums(DcmItem *it, const DcmTagKey &k)
{
    std::vector<double> v;
    OFString s;
    if (!get_str(it, k, s))
        return v;
    for (size_t start = 0; start <= s.length();) {
        size_t end = s.find('\\', start);
        end = end == OFString_npos ? s.length() : end;
        OFBool ok = OFFalse;
        double d = OFStandard::atof(s.substr(start, end - start).c_str(), &ok);
        v.push_back(ok && std::isfinite(d) ? d : NAN);
        start = end + 1;
    }
    return v;
}

/* Single frame, or a legacy multi-frame cine spaced by FrameTime/FrameTimeVector. */
static void read_frames_legacy(header_ctx &c, cmr_dicom_header *h)
{
    cmr_dicom_frame f0 = cmr_dicom_frame();
    f0.has_position = get_nums(c.ds, DCM_ImagePositionPatient, 3, f0.position);
    f0.has_orientation = get_nums(c.ds, DCM_ImageOrientationPatient, 6, f0.orientation);
    f0.rescale_slope = h->rescale_slope;
    f0.rescale_intercept = h->rescale_intercept;
    f0.has_inversion_time = get_num(c.ds, DCM_InversionTime, 0, f0.inversion_time);
    f0.has_trigger_time = get_num(c.ds, DCM_TriggerTime, 0, f0.trigger_time) ||
                          get_num(c.ds, DCM_NominalCardiacTriggerDelayTime, 0, f0.trigger_time);
    double base = f0.trigger_time;
    std::vector<double> ftv = h->frames > 1 ? all_nums(c.ds, DCM_FrameTimeVector) : std::vector<double>();
    bool use_ftv = ftv.size() >= (size_t)h->frames;
    for (size_t i = 0; use_ftv && i < ftv.size(); i++)
        use_ftv = !std::isnan(ftv[i]);
    double t = base;
    for (int i = 0; i < h->frames; i++) {
        cmr_dicom_frame *fr = &h->frame[i];
        *fr = f0;
        if (use_ftv)
            t += ftv[(size_t)i]; /* increments from the previous frame; the first is 0 */
        else if (h->frame_time > 0)
            t = base + i * h->frame_time;
        fr->trigger_time = t;
        fr->has_trigger_time = f0.has_trigger_time || (h->frames > 1 && (use_ftv || h->frame_time > 0));
    }
}

static int read_frames(header_ctx &c, cmr_dicom_header *h)
{
    if (h->frames == 0)
        return 0;
    h->frame = (cmr_dicom_frame *)calloc((size_t)h->frames, sizeof *h->frame);
    if (!h->frame)
        return failf(CMR_ENOMEM, c.path, "out of memory for %d frames", h->frames);
    if (!h->is_enhanced) {
        read_frames_legacy(c, h);
        return 0;
    }

    unsigned long n_items = c.per_frame ? c.per_frame->card() : 0;
    if (c.per_frame && n_items != (unsigned long)h->frames)
        return failf(CMR_EFORMAT, c.path, "PerFrameFunctionalGroupsSequence (5200,9230) has %lu items, NumberOfFrames is %d",
                     n_items, h->frames);
    int max_temporal = 0;
    DcmItem *pf = nullptr; /* walked in order: getItem(i) would seek from the start each time */
    for (int i = 0; i < h->frames; i++) {
        cmr_dicom_frame *fr = &h->frame[i];
        if (c.per_frame)
            pf = OFstatic_cast(DcmItem *, c.per_frame->nextInContainer(pf));
        DcmItem *rescale = fg(pf, c.shared, DCM_PixelValueTransformationSequence);
        double slope = num_or(rescale, DCM_RescaleSlope, h->rescale_slope);
        fr->rescale_slope = slope == 0 ? 1 : slope;
        fr->rescale_intercept = num_or(rescale, DCM_RescaleIntercept, h->rescale_intercept);
        fr->has_position = get_nums(fg(pf, c.shared, DCM_PlanePositionSequence), DCM_ImagePositionPatient, 3, fr->position);
        fr->has_orientation =
            get_nums(fg(pf, c.shared, DCM_PlaneOrientationSequence), DCM_ImageOrientationPatient, 6, fr->orientation);
        fr->has_trigger_time = get_num(fg(pf, c.shared, DCM_CardiacSynchronizationSequence),
                                       DCM_NominalCardiacTriggerDelayTime, 0, fr->trigger_time);
        fr->has_inversion_time =
            get_num(fg(pf, c.shared, DCM_MRModifierSequence), DCM_InversionTimes, 0, fr->inversion_time);
        DcmItem *content = fg(pf, c.shared, DCM_FrameContentSequence);
        fr->stack_position = int_or(content, DCM_InStackPositionNumber, 0);
        fr->temporal_position = int_or(content, DCM_TemporalPositionIndex, 0);
        if (fr->temporal_position > max_temporal)
            max_temporal = fr->temporal_position;
    }
    if (!h->cardiac_number_of_images && h->frame[0].has_trigger_time)
        h->cardiac_number_of_images = max_temporal;
    return 0;
}

static int read_header_from(const char *path, DcmFileFormat &ff, cmr_dicom_header **out, header_ctx &c)
{
    c = header_ctx();
    c.path = path;
    c.ff = &ff;
    c.ds = ff.getDataset();
    c.xfer = c.ds->getOriginalXfer();
    index_scope index(c.ds);
    c.shared = seq_item(c.ds, DCM_SharedFunctionalGroupsSequence);
    DcmElement *pfe = nullptr;
    if (c.ds->findAndGetElement(DCM_PerFrameFunctionalGroupsSequence, pfe).good() && pfe && pfe->ident() == EVR_SQ)
        c.per_frame = OFstatic_cast(DcmSequenceOfItems *, pfe);

    std::unique_ptr<cmr_dicom_header, header_del> hp((cmr_dicom_header *)calloc(1, sizeof(cmr_dicom_header)));
    cmr_dicom_header *h = hp.get();
    if (!h)
        return failf(CMR_ENOMEM, path, "out of memory");
    /* Some single-frame writers leave an empty per-frame item (Sunnybrook). */
    bool any_pf = false;
    for (DcmObject *o = c.per_frame ? c.per_frame->nextInContainer(nullptr) : nullptr; o && !any_pf;
         o = c.per_frame->nextInContainer(o))
        any_pf = item_nonempty(OFstatic_cast(DcmItem *, o));
    h->is_enhanced = item_nonempty(c.shared) || any_pf;
    if (!h->is_enhanced)
        c.shared = nullptr, c.per_frame = nullptr;

    /* A longer UID would be cut to fit and could then collide with another. */
    for (const DcmTagKey &k : {DCM_SOPInstanceUID, DCM_SeriesInstanceUID, DCM_StudyInstanceUID}) {
        OFString uid;
        if (get_str(c.ds, k, uid) && uid.length() > 64)
            return failf(CMR_EFORMAT, path, "%s is %zu characters long, more than 64", tag_name(k).c_str(),
                         (size_t)uid.length());
    }
    read_identity(c, h);
    read_acquisition(c, h);
    int rc = read_image_pixel(c, h);
    if (!rc)
        rc = read_frames(c, h);
    if (!rc)
        *out = hp.release();
    return rc;
}

static int read_header(const char *path, cmr_dicom_header **out, bool *is_dicom)
{
    if (!out)
        return cmr_fail(CMR_EINVAL, "cmr_dicom_read_header: no output");
    *out = nullptr;
    CMR_GUARD(path, {
        begin_call();
        DcmFileFormat ff;
        int rc = load(path, ff, HEADER_MAX_READ, is_dicom);
        if (rc || (is_dicom && !*is_dicom))
            return rc;
        header_ctx c;
        return read_header_from(path, ff, out, c);
    })
}

extern "C" int cmr_dicom_read_header(const char *path, cmr_dicom_header **out)
{
    return read_header(path, out, nullptr);
}

extern "C" int cmr_dicom_scan_header(const char *path, cmr_dicom_header **out, int *is_dicom)
{
    if (!is_dicom)
        return cmr_fail(CMR_EINVAL, "cmr_dicom_scan_header: no is_dicom output");
    bool dicom = false;
    int rc = read_header(path, out, &dicom);
    *is_dicom = dicom;
    return rc;
}

extern "C" void cmr_dicom_header_free(cmr_dicom_header *h)
{
    if (!h)
        return;
    free(h->frame);
    free(h);
}

/* ---- pixels ------------------------------------------------------------------------- */

namespace {
struct unpack {
    int bytes, bits_stored, shift, is_signed, invert, swap_halves;
    uint64_t mask;
};
} // namespace

static double sample(const unsigned char *p, const unpack &u)
{
    uint64_t raw = 0;
    switch (u.bytes) {
    case 1: raw = p[0]; break;
    case 2: raw = le16(p); break;
    case 4: {
        uint32_t w = le32(p);
        /* DCMTK swapped a big-endian file's 32-bit samples as 16-bit words. */
        raw = u.swap_halves ? (w >> 16 | w << 16) : w;
        break;
    }
    }
    int64_t v = (int64_t)((raw >> u.shift) & u.mask);
    if (u.is_signed && (v >> (u.bits_stored - 1)) & 1)
        v -= (int64_t)1 << u.bits_stored;
    if (u.invert) /* MONOCHROME1: reflect within the stored range so that high means bright */
        v = (u.is_signed ? -1 : (int64_t)u.mask) - v;
    return (double)v;
}

/* sample() for 16-bit cells without MONOCHROME1, the MR case, as a loop the
 * compiler can vectorise: the same values, with no per-sample switch.  An
 * identity rescale is skipped, which changes nothing (an integer below 2^16
 * times 1 plus 0 is exact in double). */
static void unpack16(const unsigned char *src, size_t n, const unpack &u, double slope, double intercept, float *dst)
{
    const unsigned shift = (unsigned)u.shift, mask = (unsigned)u.mask, sign = 32u - (unsigned)u.bits_stored;
    const bool is_signed = u.is_signed;
    auto value = [&](size_t i) {
        unsigned raw = ((unsigned)src[2 * i] | (unsigned)src[2 * i + 1] << 8) >> shift & mask;
        /* Two's complement from bits_stored bits (arithmetic >> as gcc and clang). */
        return is_signed ? (int)(raw << sign) >> sign : (int)raw;
    };
    if (slope == 1.0 && intercept == 0.0)
        for (size_t i = 0; i < n; i++)
            dst[i] = (float)value(i);
    else
        for (size_t i = 0; i < n; i++)
            dst[i] = (float)((double)value(i) * slope + intercept);
}

static int decode_float_data(header_ctx &c, float *px, size_t samples)
{
    size_t width = c.pixels->getTag() == DCM_FloatPixelData ? sizeof(Float32) : sizeof(Float64);
    if (c.pixels->getLength() / width < samples) /* read_image_pixel checked it; keep the bound local too */
        return failf(CMR_EFORMAT, c.path, "%s is shorter than %zu samples", tag_name(c.pixels->getTag()).c_str(), samples);
    if (c.pixels->getTag() == DCM_FloatPixelData) {
        Float32 *v = nullptr;
        if (c.pixels->getFloat32Array(v).bad() || !v)
            return failf(CMR_EFORMAT, c.path, "Float Pixel Data (7FE0,0008) cannot be read%s", dcmtk_said().c_str());
        for (size_t i = 0; i < samples; i++)
            px[i] = v[i];
    } else {
        Float64 *v = nullptr;
        if (c.pixels->getFloat64Array(v).bad() || !v)
            return failf(CMR_EFORMAT, c.path, "Double Float Pixel Data (7FE0,0009) cannot be read%s", dcmtk_said().c_str());
        for (size_t i = 0; i < samples; i++)
            px[i] = (float)v[i];
    }
    return 0;
}

static std::atomic<bool> g_own_jpegls{true};
static std::atomic<unsigned long long> g_own_jpegls_frames{0};

extern "C" void cmr_dicom_set_own_jpegls(int on) { g_own_jpegls = on != 0; }

extern "C" unsigned long long cmr_dicom_own_jpegls_frames(void) { return g_own_jpegls_frames; }

/* JPEG-LS frames through jpegls_decode.c into 8- or 16-bit cells, laid out
 * as DCMTK's decoder leaves them.  False (nothing decoded) when the data is
 * not JPEG-LS, not one fragment per frame, or a stream the decoder does not
 * take or finds damaged: DCMTK then decodes, or says what is wrong. */
static bool own_jpegls_decode(header_ctx &c, const cmr_dicom_header *h, std::unique_ptr<unsigned char, free_del> &cells)
{
    if (!g_own_jpegls || (c.xfer != EXS_JPEGLSLossless && c.xfer != EXS_JPEGLSLossy) || !c.encapsulated ||
        c.pixels->ident() != EVR_PixelData || (h->bits_allocated != 8 && h->bits_allocated != 16) ||
        int_or(c.ds, DCM_HighBit, h->bits_stored - 1) != h->bits_stored - 1)
        return false;
    DcmPixelSequence *seq = nullptr;
    if (OFstatic_cast(DcmPixelData *, c.pixels)->getEncapsulatedRepresentation(c.xfer, nullptr, seq).bad() || !seq ||
        seq->card() != (unsigned long)h->frames + 1)
        return false;
    const int cell = h->bits_allocated / 8;
    const size_t per_frame = (size_t)h->rows * (size_t)h->columns;
    cells.reset((unsigned char *)malloc(per_frame * (size_t)h->frames * (size_t)cell));
    if (!cells)
        return false;
    const cmr_jls_info want = {h->columns, h->rows, h->bits_allocated};
    for (int f = 0; f < h->frames; f++) {
        DcmPixelItem *item = nullptr;
        Uint8 *data = nullptr;
        if (seq->getItem(item, (unsigned long)f + 1).bad() || !item || item->getUint8Array(data).bad() || !data ||
            cmr_jls_decode(data, item->getLength(), &want, cells.get() + (size_t)f * per_frame * (size_t)cell, cell) !=
                CMR_JLS_OK) {
            cells.reset();
            return false;
        }
    }
    g_own_jpegls_frames += (unsigned long long)h->frames;
    return true;
}

static int decode_integer_data(header_ctx &c, cmr_dicom_header *h, float *px)
{
    const char *path = c.path;
    if (h->bits_allocated != 8 && h->bits_allocated != 16 && h->bits_allocated != 32)
        return failf(CMR_EUNSUPPORTED, path, "BitsAllocated %d is not decoded (8, 16 or 32 only)", h->bits_allocated);
    DcmXfer x(c.xfer);
    if (c.ts_unknown)
        return failf(CMR_EUNSUPPORTED, path, "transfer syntax %s is unknown to DCMTK: its pixel data cannot be decoded",
                     h->transfer_syntax_uid);
    if (c.encapsulated && !x.isEncapsulated())
        return failf(CMR_EFORMAT, path, "Pixel Data (7FE0,0010) is encapsulated but the transfer syntax %s is not",
                     h->transfer_syntax_name);
    std::unique_ptr<unsigned char, free_del> own_cells;
    if (own_jpegls_decode(c, h, own_cells)) {
        /* decoded without DCMTK: the header's sample layout stands */
    } else if (x.isEncapsulated()) {
        if (!DcmCodecList::canChangeCoding(c.xfer, EXS_LittleEndianExplicit))
            return failf(CMR_EUNSUPPORTED, path, "transfer syntax %s (%s) cannot be decoded: no decoder for it",
                         h->transfer_syntax_name, h->transfer_syntax_uid);
        OFCondition cond = c.ds->chooseRepresentation(EXS_LittleEndianExplicit, nullptr);
        if (cond.bad() || !c.ds->hasRepresentation(EXS_LittleEndianExplicit, nullptr))
            return failf(CMR_EFORMAT, path, "decoding %s pixel data failed: %s%s", h->transfer_syntax_name, cond.text(),
                         dcmtk_said().c_str());
        /* The decoder may have rewritten the element and the sample layout
         * (e.g. 12-bit JPEG data in 16-bit cells): look both up again. */
        c.pixels = element(c.ds, DCM_PixelData);
        if (!c.pixels)
            return failf(CMR_EFORMAT, path, "no Pixel Data (7FE0,0010) after decoding %s", h->transfer_syntax_name);
        h->bits_allocated = int_or(c.ds, DCM_BitsAllocated, h->bits_allocated);
        h->bits_stored = int_or(c.ds, DCM_BitsStored, h->bits_stored);
        h->pixel_representation = int_or(c.ds, DCM_PixelRepresentation, h->pixel_representation);
        if ((h->bits_allocated != 8 && h->bits_allocated != 16 && h->bits_allocated != 32) || h->bits_stored <= 0 ||
            h->bits_stored > h->bits_allocated)
            return failf(CMR_EFORMAT, path, "%s decoder produced BitsAllocated %d, BitsStored %d", h->transfer_syntax_name,
                         h->bits_allocated, h->bits_stored);
    }
    const unsigned char *bytes = own_cells.get();
    OFCondition cond;
    if (bytes) {
        /* ours */
    } else if (c.pixels->ident() == EVR_OW) {
        Uint16 *w = nullptr;
        cond = c.pixels->getUint16Array(w);
        bytes = (const unsigned char *)w;
    } else {
        Uint8 *b = nullptr;
        cond = c.pixels->getUint8Array(b);
        bytes = b;
    }
    if (cond.bad() || !bytes)
        return failf(CMR_EFORMAT, path, "Pixel Data (7FE0,0010) cannot be read: %s%s", cond.text(), dcmtk_said().c_str());

    unpack u;
    u.bytes = h->bits_allocated / 8;
    u.bits_stored = h->bits_stored;
    int high_bit = int_or(c.ds, DCM_HighBit, h->bits_stored - 1);
    if (high_bit >= h->bits_allocated || high_bit < h->bits_stored - 1)
        high_bit = h->bits_stored - 1;
    u.shift = high_bit + 1 - h->bits_stored;
    u.mask = h->bits_stored >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << h->bits_stored) - 1);
    u.is_signed = h->pixel_representation == 1;
    u.invert = !strcmp(h->photometric, "MONOCHROME1");
    u.swap_halves = x.isBigEndian() && u.bytes == 4;

    size_t per_frame = (size_t)h->rows * (size_t)h->columns;
    unsigned long long need = (unsigned long long)per_frame * (unsigned long long)h->frames * (unsigned long long)u.bytes;
    if (!own_cells && c.pixels->getLength() < need)
        return failf(CMR_EFORMAT, path, "decoded Pixel Data (7FE0,0010) holds %lu bytes, %d frame(s) of %dx%d need %llu",
                     (unsigned long)c.pixels->getLength(), h->frames, h->rows, h->columns, need);
    for (int f = 0; f < h->frames; f++) {
        const cmr_dicom_frame *fr = &h->frame[f];
        const unsigned char *src = bytes + (size_t)f * per_frame * (size_t)u.bytes;
        float *dst = px + (size_t)f * per_frame;
        if (u.bytes == 2 && !u.invert)
            unpack16(src, per_frame, u, fr->rescale_slope, fr->rescale_intercept, dst);
        else
            for (size_t i = 0; i < per_frame; i++)
                dst[i] = (float)(sample(src + i * (size_t)u.bytes, u) * fr->rescale_slope + fr->rescale_intercept);
    }
    return 0;
}

static int read_pixels(const char *path, cmr_dicom_header **hdr, float **pixels)
{
    DcmFileFormat ff;
    int rc = load(path, ff, DCM_MaxReadLength);
    header_ctx c;
    cmr_dicom_header *hp = nullptr;
    if (rc || (rc = read_header_from(path, ff, &hp, c)))
        return rc;
    std::unique_ptr<cmr_dicom_header, header_del> h(hp);
    if (!h->has_pixel_data)
        return failf(CMR_EFORMAT, path, "no Pixel Data (7FE0,0010): not an image (SOP class %s)", h->sop_class_uid);
    if (h->samples_per_pixel != 1 || (strcmp(h->photometric, "MONOCHROME1") && strcmp(h->photometric, "MONOCHROME2")))
        return failf(CMR_EUNSUPPORTED, path,
                     "colour image (PhotometricInterpretation %s, SamplesPerPixel %d): only greyscale is decoded",
                     h->photometric[0] ? h->photometric : "absent", h->samples_per_pixel);
    size_t samples = (size_t)h->rows * (size_t)h->columns * (size_t)h->frames;
    if (samples > CMR_DICOM_MAX_SAMPLES)
        return failf(CMR_EUNSUPPORTED, path, "%d frame(s) of %dx%d is more than %llu samples", h->frames, h->rows,
                     h->columns, (unsigned long long)CMR_DICOM_MAX_SAMPLES);
    std::unique_ptr<float, free_del> px((float *)malloc(samples * sizeof(float)));
    if (!px)
        return failf(CMR_ENOMEM, path, "out of memory for %zu samples", samples);
    ensure_codecs();
    rc = c.pixels->getTag() == DCM_PixelData ? decode_integer_data(c, h.get(), px.get())
                                             : decode_float_data(c, px.get(), samples);
    if (rc)
        return rc;
    *pixels = px.release();
    if (hdr)
        *hdr = h.release();
    return 0;
}

extern "C" int cmr_dicom_read_pixels(const char *path, cmr_dicom_header **hdr, float **pixels)
{
    if (!pixels)
        return cmr_fail(CMR_EINVAL, "cmr_dicom_read_pixels: no output");
    *pixels = nullptr;
    if (hdr)
        *hdr = nullptr;
    CMR_GUARD(path, {
        begin_call();
        return read_pixels(path, hdr, pixels);
    })
}

/* ---- structured reports ------------------------------------------------------------- */

namespace {
enum section { SEC_NONE, SEC_IMPRESSION, SEC_CONCLUSION, SEC_FINDINGS };
}

static bool has_word(const OFString &s, const char *word)
{
    std::string l(s.c_str());
    for (char &ch : l)
        ch = (char)tolower((unsigned char)ch);
    return l.find(word) != std::string::npos;
}

static bool is_code(const DSRCodedEntryValue &c, const char *value, const char *scheme)
{
    return c.getCodeValue() == value && c.getCodingSchemeDesignator() == scheme;
}

/* Section headings of TID 2000 (CID 7001) and their LOINC equivalents. */
static section classify(const DSRCodedEntryValue &c)
{
    const OFString &m = c.getCodeMeaning();
    if (is_code(c, "19005-8", "LN") || is_code(c, "121072", "DCM") || is_code(c, "121073", "DCM") ||
        has_word(m, "impression"))
        return SEC_IMPRESSION;
    if (is_code(c, "55110-1", "LN") || is_code(c, "121076", "DCM") || is_code(c, "121077", "DCM") ||
        has_word(m, "conclusion"))
        return SEC_CONCLUSION;
    if (is_code(c, "59776-5", "LN") || is_code(c, "121070", "DCM") || is_code(c, "121071", "DCM") ||
        is_code(c, "18782-3", "LN") ||
        (has_word(m, "finding") && !has_word(m, "site") && !has_word(m, "previous") && !has_word(m, "prior")))
        return SEC_FINDINGS;
    return SEC_NONE;
}

/* A CODE item is taken as a diagnosis or finding when it is content (not a
 * modifier such as a finding site) in a findings/impression section, or its
 * own concept name says so. */
static bool is_diagnosis(const DSRCodedEntryValue &name, DSRTypes::E_RelationshipType rel, section where)
{
    if (rel != DSRTypes::RT_contains && rel != DSRTypes::RT_inferredFrom && rel != DSRTypes::RT_isRoot)
        return false;
    const OFString &m = name.getCodeMeaning();
    for (const char *no : {"site", "laterality", "method", "language", "procedure", "modifier"})
        if (has_word(m, no))
            return false;
    return where != SEC_NONE || has_word(m, "diagnos") || has_word(m, "finding") || has_word(m, "disease") ||
           has_word(m, "disorder") || has_word(m, "condition");
}

static char *dup_or_null(const std::string &s)
{
    if (s.empty())
        return nullptr;
    char *d = strdup(s.c_str());
    if (!d)
        throw std::bad_alloc();
    return d;
}

static void append_text(std::string &dst, const OFString &text)
{
    if (text.empty())
        return;
    if (!dst.empty())
        dst += '\n';
    dst += text.c_str();
}

static int read_sr(const char *path, cmr_sr_report **out)
{
    DcmFileFormat ff;
    int rc = load(path, ff, DCM_MaxReadLength);
    if (rc)
        return rc;
    DcmDataset *ds = ff.getDataset();
    OFString sop;
    get_str(ds, DCM_SOPClassUID, sop);
    if (DSRTypes::sopClassUIDToDocumentType(sop) == DSRTypes::DT_invalid)
        return failf(CMR_EFORMAT, path, "not a structured report: SOP class '%s' is not an SR storage class", sop.c_str());
    DSRDocument doc;
    OFCondition cond = doc.read(*ds);
    if (cond.bad())
        return failf(CMR_EFORMAT, path, "structured report cannot be read: %s%s", cond.text(), dcmtk_said().c_str());

    std::unique_ptr<cmr_sr_report, void (*)(cmr_sr_report *)> r((cmr_sr_report *)calloc(1, sizeof(cmr_sr_report)),
                                                                 cmr_sr_report_free);
    if (!r)
        return failf(CMR_ENOMEM, path, "out of memory");
    str_field(ds, DCM_StudyInstanceUID, r->study_uid, sizeof r->study_uid);
    str_field(ds, DCM_AccessionNumber, r->accession_number, sizeof r->accession_number);

    std::string impression, conclusion, findings;
    std::vector<section> level_section; /* section in force at each tree level */
    std::vector<cmr_sr_code> codes;
    DSRDocumentTree &tree = doc.getTree();
    try {
        if (tree.gotoRoot()) {
            do {
                size_t level = tree.getLevel();
                if (level == 0)
                    continue;
                section parent = level >= 2 && level - 2 < level_section.size() ? level_section[level - 2] : SEC_NONE;
                level_section.resize(level, SEC_NONE);
                DSRContentItem &item = tree.getCurrentContentItem();
                const DSRCodedEntryValue &name = item.getConceptName();
                section own = classify(name), where = parent;
                DSRTypes::E_ValueType vt = item.getValueType();
                if (vt == DSRTypes::VT_Container)
                    where = own != SEC_NONE ? own : parent;
                else if (own == SEC_IMPRESSION || own == SEC_CONCLUSION || parent == SEC_NONE)
                    where = own;
                level_section[level - 1] = where;
                if (vt == DSRTypes::VT_Text) {
                    std::string *dst = where == SEC_IMPRESSION   ? &impression
                                       : where == SEC_CONCLUSION ? &conclusion
                                       : where == SEC_FINDINGS   ? &findings
                                                                 : nullptr;
                    if (dst)
                        append_text(*dst, item.getStringValue());
                } else if (vt == DSRTypes::VT_Code && is_diagnosis(name, item.getRelationshipType(), where)) {
                    const DSRCodedEntryValue &v = item.getCodeValue();
                    bool dup = false;
                    for (const cmr_sr_code &k : codes)
                        dup = dup || (v.getCodeValue() == k.code && v.getCodingSchemeDesignator() == k.system);
                    if (!dup && !v.getCodeValue().empty()) {
                        cmr_sr_code k = {strdup(v.getCodeValue().c_str()), strdup(v.getCodingSchemeDesignator().c_str()),
                                         strdup(v.getCodeMeaning().c_str())};
                        codes.push_back(k);
                        if (!k.code || !k.system || !k.label)
                            throw std::bad_alloc();
                    }
                }
            } while (tree.iterate());
        }
        r->n_codes = codes.size();
        if (!codes.empty()) {
            r->codes = (cmr_sr_code *)calloc(codes.size(), sizeof(cmr_sr_code));
            if (!r->codes)
                throw std::bad_alloc();
            memcpy(r->codes, codes.data(), codes.size() * sizeof(cmr_sr_code));
            codes.clear();
        }
    } catch (...) {
        for (cmr_sr_code &k : codes)
            free(k.code), free(k.system), free(k.label);
        throw;
    }
    r->impression = dup_or_null(!impression.empty() ? impression : conclusion);
    r->findings = dup_or_null(findings);
    std::ostringstream text;
    doc.getTree().print(text, 0); /* the content tree only: the document header holds patient data */
    r->full_text = dup_or_null(text.str());
    *out = r.release();
    return 0;
}

extern "C" int cmr_dicom_read_sr(const char *path, cmr_sr_report **out)
{
    if (!out)
        return cmr_fail(CMR_EINVAL, "cmr_dicom_read_sr: no output");
    *out = nullptr;
    CMR_GUARD(path, {
        begin_call();
        return read_sr(path, out);
    })
}

extern "C" void cmr_sr_report_free(cmr_sr_report *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_codes; i++)
        free(r->codes[i].code), free(r->codes[i].system), free(r->codes[i].label);
    free(r->codes);
    free(r->impression);
    free(r->findings);
    free(r->full_text);
    free(r);
}

static int write_text_sr(const char *path, const char *study_uid, const char *accession, const char *impression,
                         const char *findings, size_t n_codes, const cmr_sr_code *codes)
{
    DSRDocument doc(DSRTypes::DT_BasicTextSR);
    if (study_uid && *study_uid && doc.createNewSeriesInStudy(study_uid, OFFalse).bad())
        return failf(CMR_EINVAL, path, "Study Instance UID '%s' refused", study_uid);
    if (accession && *accession && doc.setAccessionNumber(accession, OFTrue).bad())
        return failf(CMR_EINVAL, path, "accession number '%s' is not a valid SH value", accession);
    doc.setManufacturer("cmrsearch");
    DSRDocumentTree &t = doc.getTree();
    OFCondition ok = EC_Normal;
    auto child = [&](DSRTypes::E_ValueType vt, const char *code, const char *meaning) {
        if (ok.good())
            ok = t.addChildContentItem(DSRTypes::RT_contains, vt, DSRCodedEntryValue(code, "DCM", meaning));
    };
    if (!t.addContentItem(DSRTypes::RT_isRoot, DSRTypes::VT_Container))
        return failf(CMR_EFORMAT, path, "cannot create the SR root");
    ok = t.getCurrentContentItem().setConceptName(DSRCodedEntryValue("18748-4", "LN", "Diagnostic Imaging Report"));
    if (findings && *findings) {
        child(DSRTypes::VT_Container, "121070", "Findings");
        child(DSRTypes::VT_Text, "121071", "Finding");
        if (ok.good())
            ok = t.getCurrentContentItem().setStringValue(findings);
        t.goUp();
        t.goUp();
    }
    if ((impression && *impression) || n_codes) {
        child(DSRTypes::VT_Container, "121072", "Impressions");
        if (impression && *impression) {
            child(DSRTypes::VT_Text, "121073", "Impression");
            if (ok.good())
                ok = t.getCurrentContentItem().setStringValue(impression);
            t.goUp();
        }
        for (size_t i = 0; i < n_codes && ok.good(); i++) {
            const cmr_sr_code &k = codes[i];
            if (!k.code || !k.system || !k.label || !*k.code || !*k.system || !*k.label)
                return failf(CMR_EINVAL, path, "code %zu lacks a value, scheme or meaning", i);
            child(DSRTypes::VT_Code, "121071", "Finding");
            if (ok.good())
                ok = t.getCurrentContentItem().setCodeValue(DSRCodedEntryValue(k.code, k.system, k.label));
            if (ok.bad())
                return failf(CMR_EINVAL, path, "code %s^%s^%s refused: %s", k.code, k.system, k.label, ok.text());
            t.goUp();
        }
    }
    if (ok.bad())
        return failf(CMR_EINVAL, path, "SR content refused: %s%s", ok.text(), dcmtk_said().c_str());
    DcmFileFormat ff;
    ok = doc.write(*ff.getDataset());
    if (ok.bad())
        return failf(CMR_EFORMAT, path, "SR cannot be encoded: %s%s", ok.text(), dcmtk_said().c_str());
    ok = ff.saveFile(OFFilename(path), EXS_LittleEndianExplicit);
    if (ok.bad())
        return failf(CMR_EIO, path, "cannot write: %s", ok.text());
    return 0;
}

extern "C" int cmr_dicom_write_text_sr(const char *path, const char *study_uid, const char *accession,
                                       const char *impression, const char *findings, size_t n_codes,
                                       const cmr_sr_code *codes)
{
    if (!path || (n_codes && !codes))
        return cmr_fail(CMR_EINVAL, "cmr_dicom_write_text_sr: bad arguments");
    CMR_GUARD(path, {
        begin_call();
        return write_text_sr(path, study_uid, accession, impression, findings, n_codes, codes);
    })
}
