/* vixstandin.c -- a minimal stand-in for VMware's libvixDiskLib.so.8,
 * just enough for nbdkit's VDDK plugin (nbdkit 1.32.x) to serve a
 * read-only disk.  Written from the ABI described in nbdkit's
 * plugins/vddk/vddk-structs.h and vddk-stubs.h; no VMware code.
 *
 * Disk paths:
 *   "[ds] a/b.vmdk"  ->  $VDDK_STANDIN_DATASTORES/ds/a/b.vmdk
 *   "/abs/path"      ->  /abs/path            (local mode only, i.e. no serverName)
 * The file at the mapped path holds RAW disk bytes (no VMDK header).
 * ".." components and absolute paths inside "[ds] ..." are refused.
 *
 * Environment:
 *   VDDK_STANDIN_DATASTORES  root dir of the datastores (required for "[ds] ..." paths)
 *   VDDK_STANDIN_LOG         if set, one JSON line per ConnectEx is appended here
 *                            (never the password; only whether one was given)
 *   VDDK_STANDIN_THUMBPRINT  optional: if set, remote Open fails with VIX_E_FAIL
 *                            unless thumbPrint matches (case-insensitive), like
 *                            real VDDK which detects mismatches at Open time
 *   VDDK_STANDIN_PASSWORD    optional: if set, remote ConnectEx fails with
 *                            VIX_E_HOST_USER_PERMISSIONS unless password matches
 *   VDDK_STANDIN_TRANSPORTS  modes this fake "host" offers, default "nbdssl:nbd";
 *                            Open picks the first requested mode offered
 *                            (requested default "nbdssl:nbd"); local mode = "file"
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility ("default")))

/* ---- ABI (must match VDDK 7/8 on x86_64 == nbdkit vddk-structs.h) ---- */
typedef uint64_t VixError;
#define VIX_OK                      0
#define VIX_E_FAIL                  1
#define VIX_E_OUT_OF_MEMORY         2
#define VIX_E_INVALID_ARG           3
#define VIX_E_FILE_NOT_FOUND        4
#define VIX_E_NOT_SUPPORTED         6
#define VIX_E_FILE_ERROR            7
#define VIX_E_FILE_READ_ONLY        11
#define VIX_E_FILE_NAME_INVALID     22
#define VIX_E_INVALID_HANDLE        1000
#define VIX_E_HOST_USER_PERMISSIONS 3014
#define VIX_E_DISK_INVAL            16000
#define VIX_E_DISK_NOINIT           16001
#define VIX_E_DISK_OUTOFRANGE       16007
#define VIX_E_CANNOT_CONNECT_TO_HOST 18000
#define VIX_ASYNC                   25000

#define VIXDISKLIB_FLAG_OPEN_READ_ONLY 4
#define SECTOR 512
#define VIXDISKLIB_MIN_CHUNK_SIZE   128
#define VIXDISKLIB_MAX_CHUNK_NUMBER (512*1024)

typedef void VixDiskLibGenericLogFunc (const char *fmt, va_list args);
typedef void (*VixDiskLibCompletionCB) (void *data, VixError result);

enum { CRED_UID = 1, CRED_SESSIONID = 2, CRED_TICKETID = 3, CRED_SSPI = 4 };

typedef struct VixDiskLibConnectParams {
  char *vmxSpec;
  char *serverName;
  char *thumbPrint;
  long reserved1;
  int credType;
  union {
    struct { char *userName; char *password; } uid;
    struct { char *cookie; char *userName; char *key; } sessionId;
    void *reserved2;
  } creds;
  uint32_t port;
  uint32_t nfcHostPort;
  char *reserved3;
  char reserved4[8];
  void *reserved5;
  union { struct { char *id, *datastoreMoRef, *ssId; } vStorageObjSpec; } spec;
  int specType;
} VixDiskLibConnectParams;

struct VixDiskLibGeometry { uint32_t cylinders, heads, sectors; };
typedef struct VixDiskLibInfo {
  struct VixDiskLibGeometry biosGeo, physGeo;
  uint64_t capacity;            /* sectors */
  int adapterType;
  int numLinks;
  char *parentFileNameHint;
  char *uuid;
  uint32_t logicalSectorSize;   /* 7.0+ */
  uint32_t physicalSectorSize;  /* 7.0+ */
} VixDiskLibInfo;

typedef struct { uint64_t offset, length; } VixDiskLibBlock;   /* sectors */
typedef struct { uint32_t numBlocks; VixDiskLibBlock blocks[1]; } VixDiskLibBlockList;

_Static_assert (sizeof (VixDiskLibConnectParams) == 128, "ConnectParams size");
_Static_assert (offsetof (VixDiskLibConnectParams, credType) == 32, "credType");
_Static_assert (offsetof (VixDiskLibConnectParams, creds) == 40, "creds");
_Static_assert (offsetof (VixDiskLibConnectParams, port) == 64, "port");
_Static_assert (offsetof (VixDiskLibConnectParams, nfcHostPort) == 68, "nfcHostPort");
_Static_assert (offsetof (VixDiskLibConnectParams, specType) == 120, "specType");
_Static_assert (sizeof (VixDiskLibInfo) == 64, "Info size");
_Static_assert (offsetof (VixDiskLibInfo, capacity) == 24, "capacity");
_Static_assert (offsetof (VixDiskLibInfo, logicalSectorSize) == 56, "lss");
_Static_assert (offsetof (VixDiskLibBlockList, blocks) == 8, "blocks");

typedef struct VixDiskLibCreateParams VixDiskLibCreateParams;

/* ---- internal state ---- */
struct conn {
  uint32_t magic;
  int remote;
  int read_only;
  char *transports;             /* requested, may be NULL */
  char *thumbprint;             /* as given, may be NULL */
};
struct disk {
  uint32_t magic;
  int fd;
  int read_only;
  const char *mode;             /* static string */
};
#define CONN_MAGIC 0x436f6e6e
#define DISK_MAGIC 0x4469736b

static VixDiskLibGenericLogFunc *log_fn, *warn_fn;
static int initialized;

static void
dbg (const char *fmt, ...)
{
  va_list ap;
  if (!log_fn) return;
  va_start (ap, fmt);
  log_fn (fmt, ap);
  va_end (ap);
}

/* ---- JSON log ---- */
static void
json_str (FILE *f, const char *key, const char *s)
{
  fprintf (f, "\"%s\":", key);
  if (!s) { fputs ("null", f); return; }
  fputc ('"', f);
  for (; *s; s++) {
    unsigned char c = *s;
    if (c == '"' || c == '\\') fprintf (f, "\\%c", c);
    else if (c < 0x20) fprintf (f, "\\u%04x", c);
    else fputc (c, f);
  }
  fputc ('"', f);
}

static void
log_connect (const VixDiskLibConnectParams *p, int ro, const char *snap,
             const char *modes, VixError result)
{
  const char *path = getenv ("VDDK_STANDIN_LOG");
  char *buf = NULL;
  size_t len = 0;
  FILE *f;
  int fd;
  struct timespec ts;
  struct tm tm;
  char tbuf[64];
  const char *user = NULL, *cred = "none";
  int pw = 0, cookie = 0;

  if (!path || !*path) return;
  if (p) {
    switch (p->credType) {
    case CRED_UID: cred = "uid"; user = p->creds.uid.userName;
      pw = p->creds.uid.password != NULL; break;
    case CRED_SESSIONID: cred = "sessionId"; user = p->creds.sessionId.userName;
      pw = p->creds.sessionId.key != NULL;
      cookie = p->creds.sessionId.cookie != NULL; break;
    case 0: cred = "none"; break;
    default: cred = "other"; break;
    }
  }
  clock_gettime (CLOCK_REALTIME, &ts);
  gmtime_r (&ts.tv_sec, &tm);
  strftime (tbuf, sizeof tbuf, "%Y-%m-%dT%H:%M:%SZ", &tm);

  f = open_memstream (&buf, &len);
  if (!f) return;
  fprintf (f, "{\"event\":\"ConnectEx\",\"time\":\"%s\",\"pid\":%d,", tbuf, (int) getpid ());
  json_str (f, "server", p ? p->serverName : NULL); fputc (',', f);
  fprintf (f, "\"credType\":\"%s\",", cred);
  json_str (f, "user", user); fputc (',', f);
  fprintf (f, "\"passwordGiven\":%s,\"cookieGiven\":%s,",
           pw ? "true" : "false", cookie ? "true" : "false");
  json_str (f, "thumbprint", p ? p->thumbPrint : NULL); fputc (',', f);
  json_str (f, "vmxSpec", p ? p->vmxSpec : NULL); fputc (',', f);
  json_str (f, "snapshotRef", snap); fputc (',', f);
  json_str (f, "transportModes", modes); fputc (',', f);
  fprintf (f, "\"port\":%u,\"nfcHostPort\":%u,\"readOnly\":%s,\"result\":%llu}\n",
           p ? p->port : 0, p ? p->nfcHostPort : 0, ro ? "true" : "false",
           (unsigned long long) result);
  fclose (f);

  fd = open (path, O_WRONLY|O_APPEND|O_CREAT|O_CLOEXEC, 0644);
  if (fd >= 0) {
    if (write (fd, buf, len) != (ssize_t) len) { /* best effort */ }
    close (fd);
  }
  free (buf);
}

/* ---- API ---- */
EXPORT VixError
VixDiskLib_InitEx (uint32_t major, uint32_t minor,
                   VixDiskLibGenericLogFunc *log_function,
                   VixDiskLibGenericLogFunc *warn_function,
                   VixDiskLibGenericLogFunc *panic_function,
                   const char *lib_dir, const char *config_file)
{
  (void) panic_function;
  log_fn = log_function;
  warn_fn = warn_function;
  if (major < 1 || major > 8) return VIX_E_NOT_SUPPORTED;
  initialized = 1;
  dbg ("vixstandin: InitEx(%u.%u, libdir=%s, config=%s)\n", major, minor,
       lib_dir ? lib_dir : "NULL", config_file ? config_file : "NULL");
  return VIX_OK;
}

EXPORT void
VixDiskLib_Exit (void)
{
  dbg ("vixstandin: Exit\n");
  initialized = 0;
}

EXPORT char *
VixDiskLib_GetErrorText (VixError err, const char *locale)
{
  const char *m;
  char *ret;
  (void) locale;
  switch (err) {
  case VIX_OK: m = "The operation was successful"; break;
  case VIX_E_FAIL: m = "Unknown error"; break;
  case VIX_E_OUT_OF_MEMORY: m = "Memory allocation failed. Out of memory"; break;
  case VIX_E_INVALID_ARG: m = "One of the parameters was invalid"; break;
  case VIX_E_FILE_NOT_FOUND: m = "The file was not found"; break;
  case VIX_E_NOT_SUPPORTED: m = "The operation is not supported"; break;
  case VIX_E_FILE_ERROR: m = "A file access error occurred on the host or guest operating system"; break;
  case VIX_E_FILE_READ_ONLY: m = "The file is write-protected"; break;
  case VIX_E_FILE_NAME_INVALID: m = "The file name is not valid"; break;
  case VIX_E_INVALID_HANDLE: m = "The handle is not a valid VIX object"; break;
  case VIX_E_HOST_USER_PERMISSIONS: m = "Insufficient permissions in the host operating system"; break;
  case VIX_E_DISK_INVAL: m = "An invalid disk argument was given"; break;
  case VIX_E_DISK_NOINIT: m = "Disk library has not been initialized"; break;
  case VIX_E_DISK_OUTOFRANGE: m = "The requested sectors are out of range"; break;
  case VIX_E_CANNOT_CONNECT_TO_HOST: m = "Cannot connect to host"; break;
  case VIX_ASYNC: m = "Asynchronous operation is pending"; break;
  default: m = "Unknown error code"; break;
  }
  if (asprintf (&ret, "%s (vixstandin error %llu)", m, (unsigned long long) err) < 0)
    return strdup (m);
  return ret;
}

EXPORT void
VixDiskLib_FreeErrorText (char *text)
{
  free (text);
}

EXPORT VixDiskLibConnectParams *
VixDiskLib_AllocateConnectParams (void)
{
  return calloc (1, sizeof (VixDiskLibConnectParams));
}

/* NB: only the struct is freed.  nbdkit stores its own pointers
 * (argv strings, its malloc'd password) in the fields. */
EXPORT void
VixDiskLib_FreeConnectParams (VixDiskLibConnectParams *params)
{
  free (params);
}

EXPORT VixError
VixDiskLib_ConnectEx (const VixDiskLibConnectParams *params, char read_only,
                      const char *snapshot_ref, const char *transport_modes,
                      void **connection)
{
  struct conn *c;
  VixError r = VIX_OK;
  int remote = params && params->serverName && *params->serverName;

  if (!connection) r = VIX_E_INVALID_ARG;
  else if (!initialized) r = VIX_E_DISK_NOINIT;
  else if (remote) {
    const char *want = getenv ("VDDK_STANDIN_PASSWORD");
    const char *got = NULL;
    if (params->credType == CRED_UID) got = params->creds.uid.password;
    else if (params->credType == CRED_SESSIONID) got = params->creds.sessionId.key;
    if (!params->vmxSpec)
      r = VIX_E_INVALID_ARG;
    else if (params->credType != CRED_UID && params->credType != CRED_SESSIONID)
      r = VIX_E_HOST_USER_PERMISSIONS;
    else if (want && (!got || strcmp (want, got) != 0))
      r = VIX_E_HOST_USER_PERMISSIONS;
  }
  log_connect (params, read_only, snapshot_ref, transport_modes, r);
  if (r != VIX_OK) return r;

  c = calloc (1, sizeof *c);
  if (!c) return VIX_E_OUT_OF_MEMORY;
  c->magic = CONN_MAGIC;
  c->remote = remote;
  c->read_only = read_only;
  c->transports = transport_modes ? strdup (transport_modes) : NULL;
  c->thumbprint = remote && params->thumbPrint ? strdup (params->thumbPrint) : NULL;
  *connection = c;
  dbg ("vixstandin: ConnectEx -> %s connection\n", remote ? "remote" : "local");
  return VIX_OK;
}

EXPORT VixError
VixDiskLib_Disconnect (void *connection)
{
  struct conn *c = connection;
  if (!c || c->magic != CONN_MAGIC) return VIX_E_INVALID_ARG;
  c->magic = 0;
  free (c->transports);
  free (c->thumbprint);
  free (c);
  return VIX_OK;
}

/* Map a VDDK path to a host file.  Returns malloc'd path or NULL + *err. */
static char *
map_path (const struct conn *c, const char *path, VixError *err)
{
  const char *root, *close_br, *rel;
  char *ds, *out, *p;

  if (path[0] == '/' && !c->remote)
    return strdup (path);
  if (path[0] != '[' || !(close_br = strchr (path, ']'))) {
    *err = VIX_E_FILE_NAME_INVALID; return NULL;
  }
  root = getenv ("VDDK_STANDIN_DATASTORES");
  if (!root || !*root) { *err = VIX_E_FILE_NOT_FOUND; return NULL; }
  ds = strndup (path + 1, close_br - path - 1);
  rel = close_br + 1;
  while (*rel == ' ') rel++;
  if (!ds || !*ds || strchr (ds, '/') || strcmp (ds, ".") == 0 ||
      strcmp (ds, "..") == 0 || !*rel || *rel == '/') {
    free (ds); *err = VIX_E_FILE_NAME_INVALID; return NULL;
  }
  if (asprintf (&out, "%s/%s/%s", root, ds, rel) < 0) {
    free (ds); *err = VIX_E_OUT_OF_MEMORY; return NULL;
  }
  free (ds);
  /* refuse ".." components in rel */
  for (p = out + strlen (root); (p = strstr (p, "..")) != NULL; p += 2) {
    if (p[-1] == '/' && (p[2] == '/' || p[2] == '\0')) {
      free (out); *err = VIX_E_FILE_NAME_INVALID; return NULL;
    }
  }
  return out;
}

static const char *
pick_mode (const struct conn *c)
{
  static const char *const known[] = { "nbdssl", "nbd", "hotadd", "san", "file" };
  const char *offered = getenv ("VDDK_STANDIN_TRANSPORTS");
  char *req, *tok, *save = NULL;
  const char *ret = NULL;
  size_t i;

  if (!c->remote) return "file";
  if (!offered || !*offered) offered = "nbdssl:nbd";
  req = strdup (c->transports ? c->transports : "nbdssl:nbd");
  if (!req) return NULL;
  for (tok = strtok_r (req, ":", &save); tok && !ret; tok = strtok_r (NULL, ":", &save)) {
    /* is tok in offered (colon list)? */
    size_t n = strlen (tok);
    const char *o = offered;
    while (o && *o) {
      if (strncmp (o, tok, n) == 0 && (o[n] == ':' || o[n] == '\0')) {
        for (i = 0; i < sizeof known / sizeof known[0]; i++)
          if (strcmp (known[i], tok) == 0) ret = known[i];
        break;
      }
      o = strchr (o, ':');
      if (o) o++;
    }
  }
  free (req);
  return ret;
}

EXPORT VixError
VixDiskLib_Open (void *connection, const char *path, uint32_t flags, void **handle)
{
  struct conn *c = connection;
  struct disk *d;
  VixError err = VIX_OK;
  char *host;
  const char *mode, *want_tp;
  int fd;
  struct stat st;

  if (!c || c->magic != CONN_MAGIC || !path || !handle) return VIX_E_INVALID_ARG;
  /* Real VDDK only notices a thumbprint mismatch at Open, returning
   * VIX_E_FAIL ("Unknown error"); nbdkit then prints a thumbprint hint. */
  want_tp = getenv ("VDDK_STANDIN_THUMBPRINT");
  if (c->remote && want_tp && *want_tp &&
      (!c->thumbprint || strcasecmp (want_tp, c->thumbprint) != 0)) {
    dbg ("vixstandin: Open %s: thumbprint mismatch\n", path);
    return VIX_E_FAIL;
  }
  mode = pick_mode (c);
  if (!mode) return VIX_E_NOT_SUPPORTED;
  host = map_path (c, path, &err);
  if (!host) return err;
  fd = open (host, O_RDONLY|O_CLOEXEC);
  if (fd == -1) {
    err = errno == ENOENT ? VIX_E_FILE_NOT_FOUND : VIX_E_FILE_ERROR;
    dbg ("vixstandin: Open %s -> %s: %s\n", path, host, strerror (errno));
    free (host);
    return err;
  }
  if (fstat (fd, &st) == -1 || !S_ISREG (st.st_mode)) {
    close (fd); free (host); return VIX_E_FILE_ERROR;
  }
  d = calloc (1, sizeof *d);
  if (!d) { close (fd); free (host); return VIX_E_OUT_OF_MEMORY; }
  d->magic = DISK_MAGIC;
  d->fd = fd;
  d->read_only = (flags & VIXDISKLIB_FLAG_OPEN_READ_ONLY) || c->read_only;
  d->mode = mode;
  dbg ("vixstandin: Open %s -> %s flags=%u mode=%s\n", path, host, flags, mode);
  free (host);
  *handle = d;
  return VIX_OK;
}

static struct disk *
disk_of (void *h)
{
  struct disk *d = h;
  return (d && d->magic == DISK_MAGIC) ? d : NULL;
}

EXPORT const char *
VixDiskLib_GetTransportMode (void *handle)
{
  struct disk *d = disk_of (handle);
  return d ? d->mode : "file";
}

EXPORT VixError
VixDiskLib_Close (void *handle)
{
  struct disk *d = disk_of (handle);
  if (!d) return VIX_E_INVALID_ARG;
  d->magic = 0;
  close (d->fd);
  free (d);
  return VIX_OK;
}

static int
capacity_sectors (struct disk *d, uint64_t *cap)
{
  struct stat st;
  if (fstat (d->fd, &st) == -1) return -1;
  *cap = (uint64_t) st.st_size / SECTOR;
  return 0;
}

EXPORT VixError
VixDiskLib_GetInfo (void *handle, VixDiskLibInfo **info)
{
  struct disk *d = disk_of (handle);
  VixDiskLibInfo *i;
  uint64_t cap, cyl;

  if (!d || !info) return VIX_E_INVALID_ARG;
  if (capacity_sectors (d, &cap) == -1) return VIX_E_FILE_ERROR;
  i = calloc (1, sizeof *i);
  if (!i) return VIX_E_OUT_OF_MEMORY;
  cyl = cap / (255 * 63);
  i->physGeo.heads = i->biosGeo.heads = 255;
  i->physGeo.sectors = i->biosGeo.sectors = 63;
  i->physGeo.cylinders = i->biosGeo.cylinders = cyl > 65535 ? 65535 : (uint32_t) cyl;
  i->capacity = cap;
  i->adapterType = 3;           /* SCSI LSI Logic */
  i->numLinks = 1;
  i->parentFileNameHint = NULL;
  i->uuid = NULL;
  i->logicalSectorSize = SECTOR;
  i->physicalSectorSize = SECTOR;
  *info = i;
  return VIX_OK;
}

EXPORT void
VixDiskLib_FreeInfo (VixDiskLibInfo *info)
{
  if (info) { free (info->parentFileNameHint); free (info->uuid); free (info); }
}

EXPORT VixError
VixDiskLib_Read (void *handle, uint64_t start, uint64_t nr, unsigned char *buf)
{
  struct disk *d = disk_of (handle);
  uint64_t cap, off, len, done = 0;

  if (!d || (!buf && nr)) return VIX_E_INVALID_ARG;
  if (capacity_sectors (d, &cap) == -1) return VIX_E_FILE_ERROR;
  if (start > cap || nr > cap - start) return VIX_E_DISK_OUTOFRANGE;
  off = start * SECTOR;
  len = nr * SECTOR;
  while (done < len) {
    ssize_t r = pread (d->fd, buf + done, len - done, off + done);
    if (r == -1) { if (errno == EINTR) continue; return VIX_E_FILE_ERROR; }
    if (r == 0) { memset (buf + done, 0, len - done); break; }
    done += r;
  }
  return VIX_OK;
}

EXPORT VixError
VixDiskLib_Write (void *handle, uint64_t start, uint64_t nr, const unsigned char *buf)
{
  struct disk *d = disk_of (handle);
  (void) start; (void) nr; (void) buf;
  if (!d) return VIX_E_INVALID_ARG;
  return d->read_only ? VIX_E_FILE_READ_ONLY : VIX_E_NOT_SUPPORTED;
}

/* Async variants complete synchronously: the callback runs before we
 * return VIX_ASYNC.  Argument errors are returned directly WITHOUT
 * calling the callback (nbdkit then treats the command as failed). */
EXPORT VixError
VixDiskLib_ReadAsync (void *handle, uint64_t start, uint64_t nr,
                      unsigned char *buf, VixDiskLibCompletionCB cb, void *data)
{
  VixError r;
  if (!disk_of (handle) || !cb) return VIX_E_INVALID_ARG;
  r = VixDiskLib_Read (handle, start, nr, buf);
  cb (data, r);
  return VIX_ASYNC;
}

EXPORT VixError
VixDiskLib_WriteAsync (void *handle, uint64_t start, uint64_t nr,
                       const unsigned char *buf, VixDiskLibCompletionCB cb, void *data)
{
  VixError r;
  if (!disk_of (handle) || !cb) return VIX_E_INVALID_ARG;
  r = VixDiskLib_Write (handle, start, nr, buf);
  cb (data, r);
  return VIX_ASYNC;
}

EXPORT VixError
VixDiskLib_Wait (void *handle)
{
  return disk_of (handle) ? VIX_OK : VIX_E_INVALID_ARG;
}

EXPORT VixError
VixDiskLib_Flush (void *handle)
{
  return disk_of (handle) ? VIX_OK : VIX_E_INVALID_ARG;
}

EXPORT VixError
VixDiskLib_Create (void *connection, const char *path,
                   const VixDiskLibCreateParams *cp, void *p1, void *p2)
{
  (void) connection; (void) path; (void) cp; (void) p1; (void) p2;
  return VIX_E_NOT_SUPPORTED;
}

EXPORT VixError
VixDiskLib_QueryAllocatedBlocks (void *handle, uint64_t start, uint64_t nr,
                                 uint64_t chunk, VixDiskLibBlockList **out)
{
  struct disk *d = disk_of (handle);
  uint64_t cap, pos, end, cb;
  VixDiskLibBlock *v = NULL;
  size_t n = 0, alloc = 0;
  VixDiskLibBlockList *bl;

  if (!d || !out) return VIX_E_INVALID_ARG;
  if (chunk < VIXDISKLIB_MIN_CHUNK_SIZE || (chunk & (chunk - 1)) != 0 ||
      start % chunk || nr % chunk || nr / chunk > VIXDISKLIB_MAX_CHUNK_NUMBER)
    return VIX_E_INVALID_ARG;
  if (capacity_sectors (d, &cap) == -1) return VIX_E_FILE_ERROR;
  if (start > cap) return VIX_E_DISK_OUTOFRANGE;

  cb = chunk * SECTOR;
  pos = start * SECTOR;
  end = (start + nr < cap ? start + nr : cap) * SECTOR;   /* clamp to capacity */
  while (pos < end) {
    off_t ds = lseek (d->fd, pos, SEEK_DATA), he;
    uint64_t bs, be;
    if (ds == -1) {
      if (errno == ENXIO) break;          /* no more data */
      ds = pos; he = end;                 /* SEEK_DATA unsupported: all data */
    }
    else {
      if ((uint64_t) ds >= end) break;
      he = lseek (d->fd, ds, SEEK_HOLE);
      if (he == -1) he = end;
    }
    bs = (uint64_t) ds / cb * cb;                     /* round out to chunks */
    be = ((uint64_t) he + cb - 1) / cb * cb;
    if (be > end) be = end;
    if (n && (v[n-1].offset + v[n-1].length) * SECTOR >= bs) {
      v[n-1].length = be / SECTOR - v[n-1].offset;    /* merge */
    }
    else {
      if (n == alloc) {
        VixDiskLibBlock *nv;
        alloc = alloc ? alloc * 2 : 16;
        nv = realloc (v, alloc * sizeof *v);
        if (!nv) { free (v); return VIX_E_OUT_OF_MEMORY; }
        v = nv;
      }
      v[n].offset = bs / SECTOR;
      v[n].length = (be - bs) / SECTOR;
      n++;
    }
    pos = be;
  }

  bl = calloc (1, offsetof (VixDiskLibBlockList, blocks) + (n ? n : 1) * sizeof (VixDiskLibBlock));
  if (!bl) { free (v); return VIX_E_OUT_OF_MEMORY; }
  bl->numBlocks = n;
  if (n) memcpy (bl->blocks, v, n * sizeof *v);
  free (v);
  *out = bl;
  return VIX_OK;
}

EXPORT VixError
VixDiskLib_FreeBlockList (VixDiskLibBlockList *bl)
{
  free (bl);
  return VIX_OK;
}
