// The phantom's only C++: DCMTK behind the C interface of dicom_writer.h.
#include "dicom_writer.h"

#include <cstdarg>
#include <cstdio>
#include <new>
#include <sys/stat.h>
#include <vector>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dctk.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcrleerg.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpeg/djencode.h>
#include <dcmtk/dcmjpeg/djrplol.h>
#include <dcmtk/dcmjpls/djdecode.h>
#include <dcmtk/dcmjpls/djencode.h>
#include <dcmtk/dcmjpls/djrparam.h>
#include <dcmtk/oflog/oflog.h>

#include "cmr_error.h"
#include "jpegls.h"

const char *const cmr_dcm_ts_name[CMR_TS_COUNT] = {"explicit-le", "implicit-le", "jpeg-lossless", "jpeg-ls-lossless",
                                                   "rle"};

struct cmr_dcm {
    DcmFileFormat file;
    std::vector<DcmItem *> items;          // innermost last
    std::vector<DcmSequenceOfItems *> seqs; // innermost last
};

static int g_inited;

extern "C" int cmr_dcm_global_init(void)
{
    if (g_inited)
        return 0;
    /* The JPEG encoder logs an informational line per image otherwise. */
    OFLog::configure(OFLogger::WARN_LOG_LEVEL);
    if (!dcmDataDict.isDictionaryLoaded())
        return cmr_fail(CMR_EIO, "DCMTK data dictionary not loaded (set DCMDICTPATH)");
    DJEncoderRegistration::registerCodecs();
    DJDecoderRegistration::registerCodecs();
    DJLSEncoderRegistration::registerCodecs();
    DJLSDecoderRegistration::registerCodecs();
    DcmRLEEncoderRegistration::registerCodecs();
    DcmRLEDecoderRegistration::registerCodecs();
    g_inited = 1;
    return 0;
}

extern "C" void cmr_dcm_global_cleanup(void)
{
    if (!g_inited)
        return;
    DJEncoderRegistration::cleanup();
    DJDecoderRegistration::cleanup();
    DJLSEncoderRegistration::cleanup();
    DJLSDecoderRegistration::cleanup();
    DcmRLEEncoderRegistration::cleanup();
    DcmRLEDecoderRegistration::cleanup();
    g_inited = 0;
}

extern "C" int cmr_dcm_new(cmr_dcm **out)
{
    *out = nullptr;
    cmr_dcm *d = new (std::nothrow) cmr_dcm;
    if (!d)
        return cmr_fail(CMR_ENOMEM, "out of memory creating a DICOM dataset");
    d->items.push_back(d->file.getDataset());
    *out = d;
    return 0;
}

extern "C" void cmr_dcm_free(cmr_dcm *d) { delete d; }

static DcmTagKey key_of(uint32_t tag) { return DcmTagKey((Uint16)(tag >> 16), (Uint16)(tag & 0xffff)); }

extern "C" int cmr_dcm_put(cmr_dcm *d, uint32_t tag, const char *value)
{
    OFCondition c = d->items.back()->putAndInsertString(DcmTag(key_of(tag)), value ? value : "");
    if (c.bad())
        return cmr_fail(CMR_EINVAL, "DICOM (%04x,%04x) = \"%s\": %s", tag >> 16, tag & 0xffff, value ? value : "",
                        c.text());
    return 0;
}

extern "C" int cmr_dcm_putf(cmr_dcm *d, uint32_t tag, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf)
        return cmr_fail(CMR_EINVAL, "DICOM (%04x,%04x): value too long", tag >> 16, tag & 0xffff);
    return cmr_dcm_put(d, tag, buf);
}

extern "C" int cmr_dcm_put_private(cmr_dcm *d, uint32_t tag, const char *vr, const char *value)
{
    DcmTag t(key_of(tag));
    DcmVR v(vr);
    t.setVR(v);
    DcmElement *e = nullptr;
    switch (v.getEVR()) {
    case EVR_LO: e = new (std::nothrow) DcmLongString(t); break;
    case EVR_SH: e = new (std::nothrow) DcmShortString(t); break;
    case EVR_DS: e = new (std::nothrow) DcmDecimalString(t); break;
    case EVR_IS: e = new (std::nothrow) DcmIntegerString(t); break;
    case EVR_FL: e = new (std::nothrow) DcmFloatingPointSingle(t); break;
    case EVR_FD: e = new (std::nothrow) DcmFloatingPointDouble(t); break;
    case EVR_SS: e = new (std::nothrow) DcmSignedShort(t); break;
    case EVR_US: e = new (std::nothrow) DcmUnsignedShort(t); break;
    default: return cmr_fail(CMR_EINVAL, "DICOM (%04x,%04x): unsupported private VR %s", tag >> 16, tag & 0xffff, vr);
    }
    if (!e)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    OFCondition c = e->putString(value);
    if (c.good())
        c = d->items.back()->insert(e, OFTrue);
    if (c.bad()) {
        delete e; /* not inserted, still ours */
        return cmr_fail(CMR_EINVAL, "DICOM (%04x,%04x) = \"%s\": %s", tag >> 16, tag & 0xffff, value, c.text());
    }
    return 0;
}

extern "C" int cmr_dcm_seq_begin(cmr_dcm *d, uint32_t tag)
{
    DcmSequenceOfItems *s = new (std::nothrow) DcmSequenceOfItems(DcmTag(key_of(tag)));
    if (!s)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    OFCondition c = d->items.back()->insert(s, OFTrue);
    if (c.bad()) {
        delete s;
        return cmr_fail(CMR_EINVAL, "DICOM sequence (%04x,%04x): %s", tag >> 16, tag & 0xffff, c.text());
    }
    d->seqs.push_back(s);
    return 0;
}

extern "C" int cmr_dcm_item_begin(cmr_dcm *d)
{
    if (d->seqs.empty())
        return cmr_fail(CMR_EINVAL, "DICOM item outside a sequence");
    DcmItem *it = new (std::nothrow) DcmItem;
    if (!it)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    d->seqs.back()->append(it);
    d->items.push_back(it);
    return 0;
}

extern "C" int cmr_dcm_item_end(cmr_dcm *d)
{
    if (d->items.size() <= 1)
        return cmr_fail(CMR_EINVAL, "DICOM item_end without item_begin");
    d->items.pop_back();
    return 0;
}

extern "C" int cmr_dcm_seq_end(cmr_dcm *d)
{
    if (d->seqs.empty())
        return cmr_fail(CMR_EINVAL, "DICOM seq_end without seq_begin");
    d->seqs.pop_back();
    return 0;
}

extern "C" int cmr_dcm_pixels16(cmr_dcm *d, const uint16_t *px, size_t count)
{
    OFCondition c = d->file.getDataset()->putAndInsertUint16Array(DCM_PixelData, px, (unsigned long)count);
    if (c.bad())
        return cmr_fail(CMR_EINVAL, "DICOM pixel data: %s", c.text());
    return 0;
}

/* DCMTK 3.6.7 pads odd-length JPEG-LS fragments after the EOI marker with
 * an uninitialised byte, so identical images gave different files from run
 * to run.  Zero it: archives must be byte-identical for a seed. */
static void zero_fragment_pads(DcmDataset *ds, E_TransferSyntax xfer, const DcmRepresentationParameter *rp)
{
    DcmElement *el = nullptr;
    if (ds->findAndGetElement(DCM_PixelData, el).bad() || !el)
        return;
    DcmPixelData *pd = OFstatic_cast(DcmPixelData *, el);
    DcmPixelSequence *seq = nullptr;
    if (pd->getEncapsulatedRepresentation(xfer, rp, seq).bad() || !seq)
        return;
    for (unsigned long i = 1; i < seq->card(); i++) {
        DcmPixelItem *item = nullptr;
        Uint8 *data = nullptr;
        if (seq->getItem(item, i).bad() || !item || item->getUint8Array(data).bad() || !data)
            continue;
        Uint32 len = item->getLength();
        if (len % 2 == 1) {
            std::vector<Uint8> buf(data, data + len);
            buf.push_back(0);
            item->putUint8Array(buf.data(), len + 1);
        } else if (len >= 3 && data[len - 3] == 0xff && data[len - 2] == 0xd9) {
            data[len - 1] = 0;
        }
    }
}

/* JPEG-LS lossless with the phantom's encoder, framed as DCMTK frames it
 * (offset table, one fragment per frame, odd fragments padded with a zero),
 * so the file is byte-identical to what DCMTK's cooked encoder writes,
 * without its per-image DicomImage (overlay searches, copies) and CharLS. */
static int encode_jls(DcmDataset *ds, const char *path, bool *done)
{
    *done = false;
    Uint16 rows = 0, cols = 0, bits = 0, alloc = 0, spp = 1, rep = 0;
    Sint32 frames = 1;
    if (ds->findAndGetUint16(DCM_Rows, rows).bad() || ds->findAndGetUint16(DCM_Columns, cols).bad() ||
        ds->findAndGetUint16(DCM_BitsStored, bits).bad() || ds->findAndGetUint16(DCM_BitsAllocated, alloc).bad())
        return cmr_fail(CMR_EFORMAT, "%s: JPEG-LS needs Rows, Columns, Bits Stored and Bits Allocated", path);
    ds->findAndGetUint16(DCM_SamplesPerPixel, spp);
    ds->findAndGetUint16(DCM_PixelRepresentation, rep);
    if (ds->findAndGetSint32(DCM_NumberOfFrames, frames).bad() || frames < 1)
        frames = 1;
    /* Anything else (never written by the phantom) is DCMTK's: at 8 bits
     * and below its cooked encoder also rewrites Bits Allocated. */
    if (alloc != 16 || spp != 1 || rep != 0 || bits <= 8 || bits > 16)
        return 0;
    DcmElement *el = nullptr;
    const Uint16 *px = nullptr;
    unsigned long count = 0;
    size_t npx = (size_t)rows * cols;
    if (ds->findAndGetElement(DCM_PixelData, el).bad() || !el || ds->findAndGetUint16Array(DCM_PixelData, px, &count).bad() ||
        !px || count < npx * (size_t)frames)
        return cmr_fail(CMR_EFORMAT, "%s: pixel data shorter than %ux%u x %d frames", path, cols, rows, (int)frames);
    std::vector<Uint8> buf;
    DcmPixelSequence *seq = new (std::nothrow) DcmPixelSequence(DcmTag(DCM_PixelData, EVR_OB));
    DcmPixelItem *table = new (std::nothrow) DcmPixelItem(DcmTag(DCM_Item, EVR_OB));
    if (!seq || !table) {
        delete seq;
        delete table;
        return cmr_fail(CMR_ENOMEM, "%s: out of memory", path);
    }
    seq->insert(table);
    DcmOffsetList offsets;
    OFCondition c = EC_Normal;
    try {
        buf.resize(cmr_jls_bound(cols, rows, bits) + 1);
    } catch (const std::bad_alloc &) {
        delete seq;
        return cmr_fail(CMR_ENOMEM, "%s: out of memory", path);
    }
    for (Sint32 f = 0; f < frames; f++) {
        size_t len = 0;
        int rc = cmr_jls_encode(px + npx * (size_t)f, cols, rows, bits, buf.data(), buf.size(), &len);
        if (rc) {
            delete seq;
            return cmr_fail_context(rc, "%s: frame %d: ", path, (int)f + 1);
        }
        if (len % 2)
            buf[len++] = 0;
        c = seq->storeCompressedFrame(offsets, buf.data(), (Uint32)len, 0);
        if (c.bad())
            break;
    }
    if (c.good())
        c = table->createOffsetTable(offsets);
    if (c.bad()) {
        delete seq;
        return cmr_fail(CMR_ENOMEM, "%s: JPEG-LS pixel sequence: %s", path, c.text());
    }
    DJLSRepresentationParameter rp(2, OFTrue);
    OFstatic_cast(DcmPixelData *, el)->putOriginalRepresentation(EXS_JPEGLSLossless, &rp, seq);
    *done = true;
    return 0;
}

extern "C" int cmr_dcm_save_ex(cmr_dcm *d, const char *path, int ts, unsigned flags, size_t *bytes)
{
    DcmDataset *ds = d->file.getDataset();
    E_TransferSyntax xfer = EXS_LittleEndianExplicit;
    OFCondition c = EC_Normal;
    DJ_RPLossless rp_jpeg(6, 0);
    DJLSRepresentationParameter rp_jls(2, OFTrue);
    const DcmRepresentationParameter *rp = nullptr;
    switch (ts) {
    case CMR_TS_EXPLICIT_LE:
        break;
    case CMR_TS_IMPLICIT_LE:
        xfer = EXS_LittleEndianImplicit;
        break;
    case CMR_TS_JPEG_LOSSLESS: {
        xfer = EXS_JPEGProcess14SV1;
        rp = &rp_jpeg;
        c = ds->chooseRepresentation(xfer, rp);
        break;
    }
    case CMR_TS_JPEGLS_LOSSLESS: {
        xfer = EXS_JPEGLSLossless;
        rp = &rp_jls;
        bool own = false;
        if (!(flags & CMR_DCM_DCMTK_JLS)) {
            int rc = encode_jls(ds, path, &own);
            if (rc)
                return rc;
        }
        if (!own) {
            flags |= CMR_DCM_DCMTK_JLS;
            c = ds->chooseRepresentation(xfer, rp);
        }
        break;
    }
    case CMR_TS_RLE:
        xfer = EXS_RLELossless;
        c = ds->chooseRepresentation(xfer, nullptr);
        break;
    default:
        return cmr_fail(CMR_EINVAL, "%s: unknown transfer syntax %d", path, ts);
    }
    if (c.bad() || !ds->canWriteXfer(xfer))
        return cmr_fail(CMR_EFORMAT, "%s: cannot encode as %s: %s", path, cmr_dcm_ts_name[ts], c.text());
    if (ts == CMR_TS_JPEG_LOSSLESS || (ts == CMR_TS_JPEGLS_LOSSLESS && (flags & CMR_DCM_DCMTK_JLS)))
        zero_fragment_pads(ds, xfer, rp);
    c = d->file.saveFile(path, xfer, EET_ExplicitLength, EGL_recalcGL, EPD_noChange, 0, 0, EWM_createNewMeta);
    if (c.bad())
        return cmr_fail(CMR_EIO, "%s: %s", path, c.text());
    if (bytes) {
        struct stat sb;
        *bytes = stat(path, &sb) == 0 && sb.st_size > 0 ? (size_t)sb.st_size : 0;
    }
    return 0;
}

extern "C" int cmr_dcm_save(cmr_dcm *d, const char *path, int ts, size_t *bytes)
{
    return cmr_dcm_save_ex(d, path, ts, 0, bytes);
}

extern "C" int cmr_dcm_load(const char *path, cmr_dcm **out)
{
    int rc = cmr_dcm_new(out);
    if (rc)
        return rc;
    OFCondition c = (*out)->file.loadFile(path);
    if (c.bad()) {
        cmr_dcm_free(*out);
        *out = nullptr;
        return cmr_fail(CMR_EFORMAT, "%s: %s", path, c.text());
    }
    return 0;
}

extern "C" int cmr_dcm_get(cmr_dcm *d, uint32_t tag, char *buf, size_t n)
{
    OFString s;
    OFCondition c = d->file.getDataset()->findAndGetOFStringArray(key_of(tag), s);
    if (c.bad())
        c = d->file.getMetaInfo()->findAndGetOFStringArray(key_of(tag), s);
    if (c.bad())
        return CMR_ENOTFOUND;
    snprintf(buf, n, "%s", s.c_str());
    return 0;
}

extern "C" int cmr_dcm_find(cmr_dcm *d, uint32_t tag, char *buf, size_t n)
{
    OFString s;
    OFCondition c = d->file.getDataset()->findAndGetOFStringArray(key_of(tag), s, OFTrue);
    if (c.bad())
        return CMR_ENOTFOUND;
    snprintf(buf, n, "%s", s.c_str());
    return 0;
}

extern "C" int cmr_dcm_get_pixels16(cmr_dcm *d, const uint16_t **px, size_t *count)
{
    DcmDataset *ds = d->file.getDataset();
    OFCondition c = ds->chooseRepresentation(EXS_LittleEndianExplicit, nullptr);
    if (c.bad())
        return cmr_fail(CMR_EFORMAT, "cannot decompress pixel data: %s", c.text());
    const Uint16 *p = nullptr;
    unsigned long cnt = 0;
    c = ds->findAndGetUint16Array(DCM_PixelData, p, &cnt);
    if (c.bad())
        return cmr_fail(CMR_EFORMAT, "no 16-bit pixel data: %s", c.text());
    *px = p;
    *count = cnt;
    return 0;
}

extern "C" int cmr_dcm_get_ts(cmr_dcm *d, char *buf, size_t n)
{
    return cmr_dcm_get(d, CMR_TAG(0x0002, 0x0010), buf, n);
}
