/* _cparquet: a small Parquet file, encoded in one call, in C.
 *
 * An export of a stream with thousands of actor types writes thousands of
 * small files, one per type. pyarrow's writer costs ~0.25 ms a file however
 * few its rows (writer properties, one column writer, encoder and page per
 * column, a Thrift footer: no single hot spot), which made 3,000 types of
 * 200,000 events export in ~2x the time of one type. This encoder writes
 * the same table in a few tens of microseconds: one row group, one PLAIN
 * data page (v1) per column, definition levels as RLE/bit-packed runs,
 * null counts and min/max statistics, and the footer with the caller's
 * key-value metadata (pyarrow's own ARROW:schema among them).
 *
 * The contract is documented once, on the Python side that calls it
 * (_small_parquet.encode); pyarrow's writer is its twin, and the tests read
 * what both write with pyarrow and DuckDB (tests/test_small_parquet.py).
 * It takes only the column types an export writes (int64, timestamps and
 * utf8 strings, all nullable); the caller leaves anything else to pyarrow.
 *
 * References: parquet-format's parquet.thrift (the structures and field ids
 * below), Encodings.md (PLAIN, the RLE/bit-packing hybrid), and the Thrift
 * compact protocol spec.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* The Arrow C data interface (stable ABI): what batch.__arrow_c_array__() exports. */
struct ArrowSchema {
    const char *format, *name, *metadata;
    int64_t flags, n_children;
    struct ArrowSchema **children;
    struct ArrowSchema *dictionary;
    void (*release)(struct ArrowSchema *);
    void *private_data;
};

struct ArrowArray {
    int64_t length, null_count, offset, n_buffers, n_children;
    const void **buffers;
    struct ArrowArray **children;
    struct ArrowArray *dictionary;
    void (*release)(struct ArrowArray *);
    void *private_data;
};

/* ---- an output buffer that remembers a failed allocation -------------- */

typedef struct {
    unsigned char *p;
    Py_ssize_t len, cap;
    int failed;
} buf;

static int grow(buf *b, Py_ssize_t more) {
    if (b->failed) return 0;
    if (b->len + more <= b->cap) return 1;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more) cap *= 2;
    unsigned char *p = PyMem_Realloc(b->p, cap);
    if (p == NULL) { b->failed = 1; return 0; }
    b->p = p;
    b->cap = cap;
    return 1;
}

static void put(buf *b, const void *src, Py_ssize_t n) {
    if (n && grow(b, n)) { memcpy(b->p + b->len, src, n); b->len += n; }
}

static void put_byte(buf *b, unsigned char c) { put(b, &c, 1); }

static void le32(unsigned char *t, uint32_t v) {
    for (int k = 0; k < 4; k++) t[k] = (unsigned char)(v >> (8 * k));
}

static void put_le32(buf *b, uint32_t v) {
    unsigned char t[4];
    le32(t, v);
    put(b, t, 4);
}

static void put_varint(buf *b, uint64_t v) {
    unsigned char t[10];
    int n = 0;
    do {
        t[n] = v & 0x7f;
        v >>= 7;
        if (v) t[n] |= 0x80;
        n++;
    } while (v);
    put(b, t, n);
}

/* ---- the Thrift compact protocol, as much as parquet.thrift needs ----- */

enum { T_TRUE = 1, T_FALSE = 2, T_I16 = 4, T_I32 = 5, T_I64 = 6, T_BINARY = 8, T_LIST = 9, T_STRUCT = 12 };

typedef struct {
    buf *out;
    int depth;
    int16_t last[16];  /* the last field id written, per open struct */
} thrift;

static uint64_t zigzag(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }

static void t_field(thrift *t, int16_t id, int type) {
    int delta = id - t->last[t->depth];
    if (delta > 0 && delta <= 15) {
        put_byte(t->out, (unsigned char)(delta << 4 | type));
    } else {
        put_byte(t->out, (unsigned char)type);
        put_varint(t->out, zigzag(id));
    }
    t->last[t->depth] = id;
}

static void t_int(thrift *t, int16_t id, int type, int64_t v) { t_field(t, id, type); put_varint(t->out, zigzag(v)); }
static void t_i32(thrift *t, int16_t id, int64_t v) { t_int(t, id, T_I32, v); }
static void t_i64(thrift *t, int16_t id, int64_t v) { t_int(t, id, T_I64, v); }
static void t_bool(thrift *t, int16_t id, int v) { t_field(t, id, v ? T_TRUE : T_FALSE); }

static void t_binary(thrift *t, int16_t id, const void *p, Py_ssize_t n) {
    t_field(t, id, T_BINARY);
    put_varint(t->out, (uint64_t)n);
    put(t->out, p, n);
}

/* A struct: as a field (t_struct), or as a list element (t_element); both end with t_end. */
static void t_open(thrift *t) { t->depth++; t->last[t->depth] = 0; }
static void t_struct(thrift *t, int16_t id) { t_field(t, id, T_STRUCT); t_open(t); }
static void t_element(thrift *t) { t_open(t); }
static void t_end(thrift *t) { put_byte(t->out, 0); t->depth--; }

static void t_list(thrift *t, int16_t id, int type, Py_ssize_t n) {
    t_field(t, id, T_LIST);
    if (n < 15) {
        put_byte(t->out, (unsigned char)(n << 4 | type));
    } else {
        put_byte(t->out, (unsigned char)(0xf0 | type));
        put_varint(t->out, (uint64_t)n);
    }
}

/* ---- one column: its page body and statistics ------------------------- */

enum { KIND_INT64 = 0, KIND_TIMESTAMP = 1, KIND_STRING = 2 };
enum { INT64 = 2, BYTE_ARRAY = 6 };  /* parquet.thrift Type */
/* parquet-cpp writes no min/max larger than this (WriterProperties' max_statistics_size) */
#define MAX_STATISTICS_SIZE 4096

typedef struct {
    const char *name;
    Py_ssize_t name_len;
    int kind, unit, utc;  /* unit: 0 ms, 1 us, 2 ns */
    int64_t nulls;
    int has_minmax;
    const unsigned char *min, *max;  /* strings: into the array's data */
    int32_t min_len, max_len;
    int64_t imin, imax;  /* integers */
    Py_ssize_t offset, header_len, uncompressed, compressed;
} column;

static int valid_at(const unsigned char *validity, int64_t i) {
    return validity == NULL || (validity[i >> 3] >> (i & 7)) & 1;
}

/* Definition levels (bit width 1) with their 4-byte length: one RLE run
 * when nothing is null, else bit-packed runs of at most 63 groups of 8
 * (parquet-cpp's own limit), which are the validity bits as they are. */
static void definition_levels(buf *b, const unsigned char *validity, int64_t offset, int64_t n, int64_t nulls) {
    Py_ssize_t at = b->len;
    put_le32(b, 0);
    if (!nulls) {
        put_varint(b, (uint64_t)n << 1);
        put_byte(b, 1);
    } else {
        for (int64_t start = 0; start < n; start += 63 * 8) {
            int64_t count = n - start < 63 * 8 ? n - start : 63 * 8;
            int64_t groups = (count + 7) / 8;
            put_varint(b, (uint64_t)groups << 1 | 1);
            for (int64_t g = 0; g < groups; g++) {
                unsigned char byte = 0;
                for (int k = 0; k < 8; k++) {
                    int64_t i = start + g * 8 + k;
                    if (i < n && valid_at(validity, offset + i)) byte |= 1 << k;
                }
                put_byte(b, byte);
            }
        }
    }
    if (!b->failed) le32(b->p + at, (uint32_t)(b->len - at - 4));
}

static int less(const unsigned char *a, int32_t an, const unsigned char *b, int32_t bn) {
    int c = an && bn ? memcmp(a, b, an < bn ? an : bn) : 0;
    return c < 0 || (c == 0 && an < bn);
}

/* The PLAIN values of the non-null rows, after the definition levels, and
 * the column's statistics (signed order for integers, unsigned bytes for
 * strings, as the column orders in the footer say). */
static int page_body(buf *b, column *c, struct ArrowArray *a, int64_t offset, int64_t n) {
    const unsigned char *validity = a->null_count == 0 ? NULL : a->buffers[0];
    c->nulls = 0;
    for (int64_t i = 0; validity != NULL && i < n; i++) c->nulls += !valid_at(validity, offset + i);
    definition_levels(b, validity, offset, n, c->nulls);
    c->has_minmax = 0;
    if (c->kind == KIND_STRING) {
        const int32_t *offsets = a->buffers[1];
        const unsigned char *data = a->buffers[2];
        for (int64_t i = 0; i < n; i++) {
            if (!valid_at(validity, offset + i)) continue;
            int32_t start = offsets[offset + i], len = offsets[offset + i + 1] - start;
            put_le32(b, (uint32_t)len);
            put(b, data + start, len);
            if (!c->has_minmax || less(data + start, len, c->min, c->min_len)) { c->min = data + start; c->min_len = len; }
            if (!c->has_minmax || less(c->max, c->max_len, data + start, len)) { c->max = data + start; c->max_len = len; }
            c->has_minmax = 1;
        }
        if (c->min_len > MAX_STATISTICS_SIZE || c->max_len > MAX_STATISTICS_SIZE) c->has_minmax = 0;
    } else {
        const int64_t *values = a->buffers[1];
        if (validity == NULL && grow(b, n * 8)) {  /* little-endian, as PLAIN is: the buffer as it is */
            memcpy(b->p + b->len, values + offset, n * 8);
            b->len += n * 8;
        }
        for (int64_t i = 0; i < n; i++) {
            if (!valid_at(validity, offset + i)) continue;
            int64_t v = values[offset + i];
            if (validity != NULL) put(b, &v, 8);
            if (!c->has_minmax || v < c->imin) c->imin = v;
            if (!c->has_minmax || v > c->imax) c->imax = v;
            c->has_minmax = 1;
        }
        c->min = (const unsigned char *)&c->imin;
        c->max = (const unsigned char *)&c->imax;
        c->min_len = c->max_len = 8;
    }
    return !b->failed;
}

/* ---- the footer --------------------------------------------------------- */

static void schema_element(thrift *t, const column *c) {
    t_element(t);
    t_i32(t, 1, c->kind == KIND_STRING ? BYTE_ARRAY : INT64);
    t_i32(t, 3, 1);  /* OPTIONAL */
    t_binary(t, 4, c->name, c->name_len);
    if (c->kind == KIND_STRING) t_i32(t, 6, 0);  /* converted type UTF8 */
    if (c->kind == KIND_TIMESTAMP && c->unit < 2) t_i32(t, 6, c->unit ? 10 : 9);  /* TIMESTAMP_MICROS / _MILLIS */
    if (c->kind != KIND_INT64) {
        t_struct(t, 10);  /* LogicalType */
        if (c->kind == KIND_STRING) {
            t_struct(t, 1);  /* STRING */
            t_end(t);
        } else {
            t_struct(t, 8);  /* TIMESTAMP */
            t_bool(t, 1, c->utc);
            t_struct(t, 2);  /* TimeUnit */
            t_struct(t, (int16_t)(c->unit + 1));  /* MILLIS, MICROS, NANOS */
            t_end(t);
            t_end(t);
            t_end(t);
        }
        t_end(t);
    }
    t_end(t);
}

static void column_chunk(thrift *t, const column *c, int codec, int64_t n) {
    t_element(t);
    t_i64(t, 2, 0);  /* file_offset: deprecated, 0 as parquet-cpp writes it */
    t_struct(t, 3);  /* ColumnMetaData */
    t_i32(t, 1, c->kind == KIND_STRING ? BYTE_ARRAY : INT64);
    t_list(t, 2, T_I32, 2);
    put_varint(t->out, zigzag(0));  /* PLAIN */
    put_varint(t->out, zigzag(3));  /* RLE */
    t_list(t, 3, T_BINARY, 1);
    put_varint(t->out, (uint64_t)c->name_len);
    put(t->out, c->name, c->name_len);
    t_i32(t, 4, codec);
    t_i64(t, 5, n);
    t_i64(t, 6, c->header_len + c->uncompressed);
    t_i64(t, 7, c->header_len + c->compressed);
    t_i64(t, 9, c->offset);
    t_struct(t, 12);  /* Statistics */
    t_i64(t, 3, c->nulls);
    if (c->has_minmax) {
        t_binary(t, 5, c->max, c->max_len);
        t_binary(t, 6, c->min, c->min_len);
        t_bool(t, 7, 1);
        t_bool(t, 8, 1);
    }
    t_end(t);
    t_end(t);
    t_end(t);
}

static void page_header(buf *b, const column *c, int64_t n) {
    thrift t = {b, 0, {0}};
    t_i32(&t, 1, 0);  /* DATA_PAGE */
    t_i32(&t, 2, c->uncompressed);
    t_i32(&t, 3, c->compressed);
    t_struct(&t, 5);  /* DataPageHeader */
    t_i32(&t, 1, n);
    t_i32(&t, 2, 0);  /* PLAIN */
    t_i32(&t, 3, 3);  /* RLE definition levels */
    t_i32(&t, 4, 3);  /* RLE repetition levels (none: the columns are flat) */
    t_end(&t);
    put_byte(b, 0);
}

/* ---- the module function ------------------------------------------------ */

/* The Arrow format string of a column of this kind: "l" (int64), "tsn:UTC"
 * and the like (timestamps: unit, then the time zone, if any), "u" (utf8;
 * not "U", whose offsets are 64-bit). */
static int format_is(const char *format, const column *c) {
    if (c->kind == KIND_INT64) return strcmp(format, "l") == 0;
    if (c->kind == KIND_STRING) return strcmp(format, "u") == 0;
    return strncmp(format, "ts", 2) == 0 && format[2] == "mun"[c->unit] && format[3] == ':'
           && (format[4] != 0) == (c->utc != 0);
}

/* Parses (name: str, kind, unit, utc) for each column. */
static int parse_columns(PyObject *spec, column *cols, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(spec, i);
        memset(&cols[i], 0, sizeof(column));
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 4) {
            PyErr_SetString(PyExc_TypeError, "a column is (name, kind, unit, utc)");
            return 0;
        }
        cols[i].name = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(item, 0), &cols[i].name_len);
        cols[i].kind = (int)PyLong_AsLong(PyTuple_GET_ITEM(item, 1));
        cols[i].unit = (int)PyLong_AsLong(PyTuple_GET_ITEM(item, 2));
        cols[i].utc = PyObject_IsTrue(PyTuple_GET_ITEM(item, 3));
        if (cols[i].name == NULL || PyErr_Occurred()) return 0;
        if (cols[i].kind < KIND_INT64 || cols[i].kind > KIND_STRING || cols[i].unit < 0 || cols[i].unit > 2) {
            PyErr_SetString(PyExc_ValueError, "unknown column kind or unit");
            return 0;
        }
    }
    return 1;
}

/* The page body as the codec leaves it: compress(bytes) -> a buffer, held
 * in `view` until released (`*owner` set); or the body itself (None). */
static int compressed(buf *body, PyObject *compress, Py_buffer *view, PyObject **owner) {
    *owner = NULL;
    if (compress == Py_None) return PyBuffer_FillInfo(view, NULL, body->p, body->len, 1, PyBUF_SIMPLE) == 0;
    PyObject *raw = PyBytes_FromStringAndSize((const char *)body->p, body->len);
    if (raw == NULL) return 0;
    PyObject *done = PyObject_CallOneArg(compress, raw);
    Py_DECREF(raw);
    if (done == NULL) return 0;
    if (PyObject_GetBuffer(done, view, PyBUF_SIMPLE) < 0) { Py_DECREF(done); return 0; }
    *owner = done;
    return 1;
}

static PyObject *encode(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError,
                        "encode(schema_capsule, array_capsule, columns, metadata, codec, compress, created_by)");
        return NULL;
    }
    PyObject *spec = args[2], *metadata = args[3], *compress = args[5];
    int codec = (int)PyLong_AsLong(args[4]);
    Py_ssize_t created_len;
    const char *created_by = PyUnicode_AsUTF8AndSize(args[6], &created_len);
    if (created_by == NULL || PyErr_Occurred()) return NULL;
    if (!PyTuple_Check(spec) || !PyList_Check(metadata)) {
        PyErr_SetString(PyExc_TypeError, "columns is a tuple, metadata a list of (key, value) bytes");
        return NULL;
    }
    struct ArrowSchema *types = PyCapsule_GetPointer(args[0], "arrow_schema");
    struct ArrowArray *batch = types == NULL ? NULL : PyCapsule_GetPointer(args[1], "arrow_array");
    if (batch == NULL) return NULL;
    Py_ssize_t ncols = PyTuple_GET_SIZE(spec);
    if (types->n_children != ncols || batch->n_children != ncols || batch->length <= 0) {
        PyErr_SetString(PyExc_ValueError, "the batch has other columns than described, or no rows");
        return NULL;
    }
    column *cols = PyMem_Calloc(ncols ? ncols : 1, sizeof(column));
    if (cols == NULL) return PyErr_NoMemory();
    PyObject *result = NULL;
    buf out = {0}, body = {0};
    int64_t n = batch->length;
    if (!parse_columns(spec, cols, ncols)) goto done;
    for (Py_ssize_t i = 0; i < ncols; i++) {
        if (!format_is(types->children[i]->format, &cols[i])) {
            PyErr_Format(PyExc_ValueError, "column %zd is of Arrow type %s, not the one described", i,
                         types->children[i]->format);
            goto done;
        }
    }

    put(&out, "PAR1", 4);
    for (Py_ssize_t i = 0; i < ncols; i++) {
        struct ArrowArray *a = batch->children[i];
        if (a->n_buffers != (cols[i].kind == KIND_STRING ? 3 : 2) || a->length < batch->offset + n) {
            PyErr_SetString(PyExc_ValueError, "a column's buffers are not those of its kind");
            goto done;
        }
        body.len = 0;
        if (!page_body(&body, &cols[i], a, a->offset + batch->offset, n)) { PyErr_NoMemory(); goto done; }
        cols[i].uncompressed = body.len;
        /* The header holds the compressed size: compress first, then the header, then the page. */
        Py_buffer page;
        PyObject *owner;
        if (!compressed(&body, compress, &page, &owner)) goto done;
        cols[i].compressed = page.len;
        int ok = cols[i].uncompressed <= INT32_MAX && cols[i].compressed <= INT32_MAX;
        if (ok) {
            cols[i].offset = out.len;
            page_header(&out, &cols[i], n);
            cols[i].header_len = out.len - cols[i].offset;
            put(&out, page.buf, page.len);
        } else {
            PyErr_SetString(PyExc_OverflowError, "a column of more than 2 GiB for one page");
        }
        if (owner != NULL) {
            PyBuffer_Release(&page);
            Py_DECREF(owner);
        }
        if (!ok) goto done;
    }

    Py_ssize_t footer = out.len;
    int64_t total = 0, total_compressed = 0;
    for (Py_ssize_t i = 0; i < ncols; i++) {
        total += cols[i].header_len + cols[i].uncompressed;
        total_compressed += cols[i].header_len + cols[i].compressed;
    }
    thrift t = {&out, 0, {0}};
    t_i32(&t, 1, 2);  /* version */
    t_list(&t, 2, T_STRUCT, ncols + 1);
    t_element(&t);  /* the root */
    t_i32(&t, 3, 0);  /* REQUIRED */
    t_binary(&t, 4, "schema", 6);
    t_i32(&t, 5, ncols);
    t_end(&t);
    for (Py_ssize_t i = 0; i < ncols; i++) schema_element(&t, &cols[i]);
    t_i64(&t, 3, n);
    t_list(&t, 4, T_STRUCT, 1);
    t_element(&t);  /* the row group */
    t_list(&t, 1, T_STRUCT, ncols);
    for (Py_ssize_t i = 0; i < ncols; i++) column_chunk(&t, &cols[i], codec, n);
    t_i64(&t, 2, total);
    t_i64(&t, 3, n);
    t_i64(&t, 5, 4);
    t_i64(&t, 6, total_compressed);
    t_int(&t, 7, T_I16, 0);
    t_end(&t);
    Py_ssize_t nkv = PyList_GET_SIZE(metadata);
    t_list(&t, 5, T_STRUCT, nkv);
    for (Py_ssize_t i = 0; i < nkv; i++) {
        PyObject *pair = PyList_GET_ITEM(metadata, i);
        char *key, *value;
        Py_ssize_t key_len, value_len;
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2
            || PyBytes_AsStringAndSize(PyTuple_GET_ITEM(pair, 0), &key, &key_len) < 0
            || PyBytes_AsStringAndSize(PyTuple_GET_ITEM(pair, 1), &value, &value_len) < 0) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "metadata is a list of (key, value) bytes");
            goto done;
        }
        t_element(&t);
        t_binary(&t, 1, key, key_len);
        t_binary(&t, 2, value, value_len);
        t_end(&t);
    }
    t_binary(&t, 6, created_by, created_len);
    t_list(&t, 7, T_STRUCT, ncols);  /* column orders: each type's own (TYPE_ORDER) */
    for (Py_ssize_t i = 0; i < ncols; i++) {
        t_element(&t);
        t_struct(&t, 1);
        t_end(&t);
        t_end(&t);
    }
    put_byte(&out, 0);
    put_le32(&out, (uint32_t)(out.len - footer));
    put(&out, "PAR1", 4);
    if (out.failed) { PyErr_NoMemory(); goto done; }
    result = PyBytes_FromStringAndSize((const char *)out.p, out.len);

done:
    PyMem_Free(out.p);
    PyMem_Free(body.p);
    PyMem_Free(cols);
    return result;
}

static PyMethodDef methods[] = {
    {"encode", (PyCFunction)(void (*)(void))encode, METH_FASTCALL,
     "encode(schema_capsule, array_capsule, columns, metadata, codec, compress, created_by) -> bytes; "
     "see _small_parquet"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cparquet", NULL, -1, methods};

PyMODINIT_FUNC PyInit__cparquet(void) {
    const uint16_t probe = 1;
    if (*(const unsigned char *)&probe != 1) {  /* PLAIN is little-endian; the buffers are copied as they are */
        PyErr_SetString(PyExc_ImportError, "_cparquet assumes a little-endian machine");
        return NULL;
    }
    return PyModule_Create(&module);
}
