/* cmrsearch serve: an uploaded study (a zip of its folder, or multipart form
 * data of DICOM files) into a private temporary directory.
 *
 * Nothing from the request names a file: members are written as 00000.dcm,
 * 00001.dcm ... in a fresh mkdtemp directory (0700), opened with O_EXCL and
 * O_NOFOLLOW.  Archive member names are only checked (an absolute name or a
 * ".." component refuses the whole upload: such an archive is hostile or
 * broken), links and devices are refused, and the number of files and their
 * total uncompressed size are bounded while reading, not trusted from
 * headers. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server_internal.h"

typedef struct upload {
    cmr_server *s;
    char *dir;
    size_t n_files;
    uint64_t bytes;
    int fd;          /* file being written (multipart), -1 none */
    unsigned status; /* error status once something went wrong, else 0 */
} upload;

static int fail_status(upload *u, unsigned status, int code, const char *fmt, const char *arg)
{
    u->status = status;
    return cmr_fail(code, fmt, arg);
}

static int make_dir(upload *u)
{
    const char *tmp = getenv("TMPDIR");
    if (!tmp || tmp[0] != '/' || strlen(tmp) > 200)
        tmp = "/tmp";
    size_t len = strlen(tmp) + 32;
    if (!(u->dir = malloc(len)))
        return fail_status(u, 500, CMR_ENOMEM, "%s", "out of memory");
    snprintf(u->dir, len, "%s/cmrsearch-upload-XXXXXX", tmp);
    if (!mkdtemp(u->dir)) {
        free(u->dir);
        u->dir = NULL;
        return fail_status(u, 500, CMR_EIO, "cannot make a temporary folder for the upload: %s", strerror(errno));
    }
    return 0;
}

static int next_file(upload *u)
{
    if (u->n_files >= u->s->cfg.max_upload_files) {
        char lim[32];
        snprintf(lim, sizeof lim, "%u", u->s->cfg.max_upload_files);
        return fail_status(u, 413, CMR_EINVAL, "the study has more than %s files", lim);
    }
    char path[300];
    snprintf(path, sizeof path, "%s/%05zu.dcm", u->dir, u->n_files);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return fail_status(u, 500, CMR_EIO, "cannot write an uploaded file: %s", strerror(errno));
    u->n_files++;
    return fd;
}

static int write_all(upload *u, int fd, const void *data, size_t n)
{
    if (u->bytes + n > u->s->cfg.max_upload_bytes) {
        char lim[32];
        snprintf(lim, sizeof lim, "%llu", (unsigned long long)u->s->cfg.max_upload_bytes);
        return fail_status(u, 413, CMR_EINVAL, "the study's files hold more than %s bytes", lim);
    }
    u->bytes += n;
    const char *p = data;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return fail_status(u, 500, CMR_EIO, "cannot write an uploaded file: %s", strerror(errno));
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* An archive member name we refuse: absolute, or with a ".." component. */
static int hostile_name(const char *name)
{
    if (!name || !*name || name[0] == '/' || name[0] == '\\' || strchr(name, ':'))
        return 1;
    for (const char *p = name; *p;) {
        size_t n = strcspn(p, "/\\");
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return 1;
        p += n;
        p += *p != '\0';
    }
    return 0;
}

static int extract_zip(upload *u, const uint8_t *body, size_t len)
{
    struct archive *a = archive_read_new();
    if (!a)
        return fail_status(u, 500, CMR_ENOMEM, "%s", "out of memory");
    int rc = 0;
    archive_read_support_format_zip(a);
    if (archive_read_open_memory(a, body, len) != ARCHIVE_OK) {
        rc = fail_status(u, 400, CMR_EFORMAT, "the body is not a readable zip archive: %s", archive_error_string(a));
        goto done;
    }
    struct archive_entry *e;
    int r;
    char buf[65536];
    while (!rc && (r = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
        const char *name = archive_entry_pathname(e);
        if (hostile_name(name)) {
            rc = fail_status(u, 400, CMR_EINVAL, "%s", "the zip holds a member with an absolute path or a '..' "
                                                       "component; refused");
            break;
        }
        mode_t type = archive_entry_filetype(e);
        if (type == AE_IFDIR)
            continue;
        if (type != AE_IFREG || archive_entry_hardlink(e) || archive_entry_symlink(e)) {
            rc = fail_status(u, 400, CMR_EINVAL, "%s", "the zip holds a link or a special file; refused");
            break;
        }
        int fd = next_file(u);
        if (fd < 0) {
            rc = fd;
            break;
        }
        la_ssize_t n;
        while (!rc && (n = archive_read_data(a, buf, sizeof buf)) > 0)
            rc = write_all(u, fd, buf, (size_t)n);
        if (!rc && n < 0)
            rc = fail_status(u, 400, CMR_EFORMAT, "a zip member cannot be read: %s", archive_error_string(a));
        close(fd);
    }
    if (!rc && r != ARCHIVE_EOF)
        rc = fail_status(u, 400, CMR_EFORMAT, "the zip archive is damaged: %s", archive_error_string(a));
done:
    archive_read_free(a);
    return rc;
}

static enum MHD_Result on_part(void *cls, enum MHD_ValueKind kind, const char *key, const char *filename,
                               const char *content_type, const char *transfer_encoding, const char *data,
                               uint64_t off, size_t size)
{
    (void)kind;
    (void)key;
    (void)content_type;
    (void)transfer_encoding;
    upload *u = cls;
    if (u->status)
        return MHD_NO;
    if (!filename)
        return MHD_YES; /* a plain form field: not a file */
    if (off == 0) {
        if (u->fd >= 0)
            close(u->fd);
        u->fd = next_file(u);
        if (u->fd < 0)
            return MHD_NO;
    }
    if (size && u->fd >= 0 && write_all(u, u->fd, data, size))
        return MHD_NO;
    return MHD_YES;
}

static int extract_multipart(upload *u, srv_request *q)
{
    struct MHD_PostProcessor *pp = MHD_create_post_processor(q->conn, 65536, on_part, u);
    if (!pp)
        return fail_status(u, 400, CMR_EFORMAT, "%s", "multipart/form-data without a boundary");
    enum MHD_Result ok = MHD_post_process(pp, (const char *)q->body, q->body_len);
    enum MHD_Result done = MHD_destroy_post_processor(pp);
    if (u->fd >= 0)
        close(u->fd);
    u->fd = -1;
    if (u->status)
        return CMR_EINVAL;
    if (ok != MHD_YES || done != MHD_YES)
        return fail_status(u, 400, CMR_EFORMAT, "%s", "the multipart/form-data body is malformed");
    return 0;
}

void srv_upload_remove(char *dir, size_t n_files)
{
    if (!dir)
        return;
    char path[300];
    for (size_t i = 0; i < n_files; i++) {
        snprintf(path, sizeof path, "%s/%05zu.dcm", dir, i);
        unlink(path);
    }
    rmdir(dir);
    free(dir);
}

int srv_upload_extract(cmr_server *s, srv_request *q, char **dir, size_t *n_files, unsigned *status)
{
    *dir = NULL;
    *n_files = 0;
    *status = 0;
    upload u = {.s = s, .fd = -1};
    const char *ct = MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    int zip = ct && (!strncasecmp(ct, "application/zip", 15) || !strncasecmp(ct, "application/x-zip-compressed", 28));
    int multipart = ct && !strncasecmp(ct, "multipart/form-data", 19);
    int rc;
    if (!zip && !multipart) {
        *status = 415;
        return cmr_fail(CMR_EUNSUPPORTED, "send the study as application/zip (its folder zipped) or as "
                                          "multipart/form-data of DICOM files");
    }
    if (!q->body_len) {
        *status = 400;
        return cmr_fail(CMR_EINVAL, "the request has no body: upload a study");
    }
    if ((rc = make_dir(&u)) == 0)
        rc = zip ? extract_zip(&u, q->body, q->body_len) : extract_multipart(&u, q);
    if (!rc && !u.n_files)
        rc = fail_status(&u, 400, CMR_EINVAL, "%s", "the upload holds no files");
    if (rc) {
        *status = u.status ? u.status : 400;
        srv_upload_remove(u.dir, u.n_files);
        return rc;
    }
    *dir = u.dir;
    *n_files = u.n_files;
    return 0;
}
