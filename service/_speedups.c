/* The transform's hot loops in C: reading a Pinpoint event and writing its answer.
 *
 * The pure-Python path (service/adapters/raw_event.py, service/adapters/pinpoint.py) does the
 * same work with msgspec and bytes joins; on real events (endpoints of 500-600 bytes, 36-character
 * item IDs) its per-endpoint steps cost more than a whole dict-lookup server spends on the event.
 * This module is optional: `pip install` builds it where a C compiler is found, and the Python
 * path is used where it is absent or CATALOG_ENRICHER_NO_EXTENSIONS is set. Both must answer every
 * event identically (tests/test_speedups.py holds them to it).
 *
 * scan_event(body, max_endpoints, max_items, max_id_chars, max_depth)
 *     One pass over the body: checks that it is JSON (UTF-8, strings, escapes, numbers, literals,
 *     nesting at most max_depth), and finds the top-level ApplicationId and, in each endpoint of
 *     Endpoints, RecommendationItems and Demographic.Locale. Returns
 *     (application_id, endpoints, item_ids, locales) with endpoints a list of
 *     (endpoint_id, endpoint_text, items, locale), endpoint_text a memoryview of the body from the
 *     endpoint's `{` to its `}`; item_ids every ID once in first-seen order; locales a set.
 *     Returns None for anything the general path must read and explain: not JSON, too deep, no
 *     Endpoints, an endpoint without RecommendationItems (or with too many or none, or an ID
 *     that cannot exist), a Recommendations key already there, duplicate keys where they matter,
 *     a backslash in an item ID, a locale or a key of an endpoint, any \u escape (the general
 *     path decodes them), more than max_endpoints endpoints, or none.
 *
 * splice_answer(endpoints, kept, own, pieces, first, cap[, by_locale])
 *     The transform's serialised answer for scanned endpoints: each endpoint's own text with
 *     `"Recommendations":{...}` put before its closing brace, its values taken from the rows of
 *     its items (`kept`, then `own`: item ID -> tuple of serialised values, or False for an item
 *     a message may not show; an ID in neither is not in the catalog), at most `cap` rows, an
 *     attribute marked in `first` taking the first row's value alone. `pieces` are the constant
 *     texts between the values (Enricher.endpoint_pieces). With `by_locale` (an event of several
 *     locales: locale -> (kept, own)), each endpoint's rows come from its own locale's pair
 *     instead. Returns (answer bytes, endpoints left out for want of a row).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* ------------------------------------------------------------------------------------------ */
/* Reading                                                                                      */

typedef struct {
    const unsigned char *start;
    const unsigned char *p;
    const unsigned char *end;
    int depth;
    int max_depth;
} Reader;

/* A string's contents as read: where they lie, and what they hold. */
typedef struct {
    const unsigned char *start; /* after the opening quote */
    Py_ssize_t length;          /* bytes before the closing quote */
    int escaped;                /* holds a backslash */
    int ascii;
} Str;

static inline void skip_ws(Reader *r) {
    while (r->p < r->end) {
        unsigned char c = *r->p;
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t')
            r->p++;
        else
            break;
    }
}

/* One UTF-8 sequence starting at p (a byte >= 0x80): its length, or 0 if it is not well formed
 * (overlong forms, surrogates and code points past U+10FFFF are not). */
static inline int utf8_sequence(const unsigned char *p, const unsigned char *end) {
    unsigned char c = p[0];
    if (c >= 0xC2 && c <= 0xDF) {
        if (end - p < 2 || (p[1] & 0xC0) != 0x80) return 0;
        return 2;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        if (end - p < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && p[1] < 0xA0) return 0;  /* overlong */
        if (c == 0xED && p[1] >= 0xA0) return 0; /* a surrogate */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (end - p < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80
            || (p[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && p[1] < 0x90) return 0;  /* overlong */
        if (c == 0xF4 && p[1] >= 0x90) return 0; /* past U+10FFFF */
        return 4;
    }
    return 0;
}

/* Bytes a string's scan must stop at: the closing quote, a backslash, a control character (which
 * JSON wants escaped) and the first byte of a UTF-8 sequence (which must be checked). */
static unsigned char stops[256];

static void init_stops(void) {
    for (int c = 0; c < 256; c++) stops[c] = (c < 0x20 || c == '"' || c == '\\' || c >= 0x80);
}

/* The first byte at or after p that a string's scan must stop at (or end). Most of an event's
 * bytes are plain string text: 16 at a time where SSE2 is there (every x86-64), one at a time
 * through the table elsewhere. */
static inline const unsigned char *skip_plain(const unsigned char *p, const unsigned char *end) {
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\');
    const __m128i space = _mm_set1_epi8(0x20);
    while (end - p >= 16) {
        __m128i chunk = _mm_loadu_si128((const __m128i *)p);
        /* Signed: below 0x20 is a control character, and a byte from 0x80 up is negative. */
        __m128i found = _mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(chunk, quote), _mm_cmpeq_epi8(chunk, backslash)),
            _mm_cmplt_epi8(chunk, space));
        int mask = _mm_movemask_epi8(found);
        if (mask) return p + __builtin_ctz(mask);
        p += 16;
    }
#endif
    while (p < end && !stops[*p]) p++;
    return p;
}

/* A string at r->p (its opening quote). 0 when it is not a JSON string this reader takes
 * (a \u escape included: the general path decodes those). */
static int read_string(Reader *r, Str *s) {
    const unsigned char *p = r->p + 1, *end = r->end;
    s->start = p;
    s->escaped = 0;
    s->ascii = 1;
    for (;;) {
        p = skip_plain(p, end);
        if (p >= end) return 0;
        unsigned char c = *p;
        if (c == '"') {
            s->length = p - s->start;
            r->p = p + 1;
            return 1;
        }
        if (c == '\\') {
            if (p + 1 >= end) return 0;
            switch (p[1]) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
                break;
            default: /* \u, or not an escape at all */
                return 0;
            }
            s->escaped = 1;
            p += 2;
            continue;
        }
        if (c < 0x20) return 0; /* a control character must be escaped */
        int n = utf8_sequence(p, end);
        if (n == 0) return 0;
        s->ascii = 0;
        p += n;
    }
}

/* The characters (code points) of an unescaped string: its bytes less UTF-8's continuations. */
static Py_ssize_t chars_of(const Str *s) {
    if (s->ascii) return s->length;
    Py_ssize_t chars = 0;
    for (Py_ssize_t i = 0; i < s->length; i++) chars += (s->start[i] & 0xC0) != 0x80;
    return chars;
}

static inline int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static int read_number(Reader *r) {
    const unsigned char *p = r->p, *end = r->end;
    if (p < end && *p == '-') p++;
    if (p >= end) return 0;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && is_digit(*p)) p++;
    } else {
        return 0;
    }
    if (p < end && *p == '.') {
        p++;
        if (p >= end || !is_digit(*p)) return 0;
        while (p < end && is_digit(*p)) p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || !is_digit(*p)) return 0;
        while (p < end && is_digit(*p)) p++;
    }
    r->p = p;
    return 1;
}

static int read_literal(Reader *r, const char *word, Py_ssize_t length) {
    if (r->end - r->p < length || memcmp(r->p, word, length) != 0) return 0;
    r->p += length;
    return 1;
}

static int read_value(Reader *r);

/* An object or array at r->p: its members read and checked, nesting counted. */
static int read_container(Reader *r) {
    unsigned char open = *r->p;
    if (++r->depth > r->max_depth) return 0;
    r->p++;
    skip_ws(r);
    if (r->p < r->end && *r->p == (open == '{' ? '}' : ']')) {
        r->p++;
        r->depth--;
        return 1;
    }
    for (;;) {
        if (open == '{') {
            Str key;
            if (r->p >= r->end || *r->p != '"' || !read_string(r, &key)) return 0;
            skip_ws(r);
            if (r->p >= r->end || *r->p != ':') return 0;
            r->p++;
            skip_ws(r);
        }
        if (!read_value(r)) return 0;
        skip_ws(r);
        if (r->p >= r->end) return 0;
        if (*r->p == ',') {
            r->p++;
            skip_ws(r);
            continue;
        }
        if (*r->p == (open == '{' ? '}' : ']')) {
            r->p++;
            r->depth--;
            return 1;
        }
        return 0;
    }
}

/* Any JSON value at r->p (whitespace before it already skipped). */
static int read_value(Reader *r) {
    if (r->p >= r->end) return 0;
    switch (*r->p) {
    case '{': case '[':
        return read_container(r);
    case '"': {
        Str s;
        return read_string(r, &s);
    }
    case 't':
        return read_literal(r, "true", 4);
    case 'f':
        return read_literal(r, "false", 5);
    case 'n':
        return read_literal(r, "null", 4);
    default:
        return read_number(r);
    }
}

static inline int key_is(const Str *key, const char *name, Py_ssize_t length) {
    return key->length == length && memcmp(key->start, name, length) == 0;
}

/* Member loop helpers: after a member's value, a comma (1: another member follows) or the
 * closing brace (0: done); -1 when neither. */
static inline int next_member(Reader *r) {
    skip_ws(r);
    if (r->p >= r->end) return -1;
    if (*r->p == ',') {
        r->p++;
        skip_ws(r);
        return 1;
    }
    if (*r->p == '}') {
        r->p++;
        return 0;
    }
    return -1;
}

/* A key and its colon, at r->p. */
static inline int read_key(Reader *r, Str *key) {
    if (r->p >= r->end || *r->p != '"' || !read_string(r, key)) return 0;
    skip_ws(r);
    if (r->p >= r->end || *r->p != ':') return 0;
    r->p++;
    skip_ws(r);
    return 1;
}

static PyObject *new_text(const Str *s) {
    if (s->ascii) return PyUnicode_FromKindAndData(PyUnicode_1BYTE_KIND, s->start, s->length);
    return PyUnicode_DecodeUTF8((const char *)s->start, s->length, "strict");
}

/* A string's value as UTF-8 bytes, its escapes decoded (read_string let through only the
 * two-character ones). */
static PyObject *unescaped_bytes(const Str *s) {
    PyObject *bytes = PyBytes_FromStringAndSize(NULL, s->length);
    if (bytes == NULL) return NULL;
    char *out = PyBytes_AS_STRING(bytes);
    Py_ssize_t n = 0;
    for (Py_ssize_t i = 0; i < s->length; i++) {
        unsigned char c = s->start[i];
        if (c == '\\') {
            switch (s->start[++i]) {
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            default: c = s->start[i]; /* '"', '\\' or '/' */
            }
        }
        out[n++] = (char)c;
    }
    if (_PyBytes_Resize(&bytes, n) < 0) return NULL;
    return bytes;
}

typedef struct {
    Py_ssize_t max_items;
    Py_ssize_t max_id_chars;
} Limits;

/* RecommendationItems at r->p: an array of 1..max_items strings, each an ID that can exist
 * (1..max_id_chars characters, no escape: an escaped NUL or quote is the general path's). A new
 * list, or NULL with no exception set when the general path must judge it (NULL with an
 * exception: out of memory). Each ID also goes into `seen` (ID -> None), in first-seen order. */
static PyObject *read_items(Reader *r, const Limits *limits, PyObject *seen) {
    if (r->p >= r->end || *r->p != '[') return NULL;
    if (++r->depth > r->max_depth) return NULL;
    r->p++;
    skip_ws(r);
    PyObject *items = PyList_New(0);
    if (items == NULL) return NULL;
    if (r->p < r->end && *r->p == ']') goto refused; /* empty */
    for (;;) {
        Str s;
        if (r->p >= r->end || *r->p != '"' || !read_string(r, &s)) goto refused;
        if (s.escaped || s.length == 0 || chars_of(&s) > limits->max_id_chars) goto refused;
        if (PyList_GET_SIZE(items) >= limits->max_items) goto refused;
        PyObject *id = new_text(&s);
        if (id == NULL) goto failed;
        if (PyList_Append(items, id) < 0 || PyDict_SetDefault(seen, id, Py_None) == NULL) {
            Py_DECREF(id);
            goto failed;
        }
        Py_DECREF(id);
        skip_ws(r);
        if (r->p >= r->end) goto refused;
        if (*r->p == ',') {
            r->p++;
            skip_ws(r);
            continue;
        }
        if (*r->p == ']') {
            r->p++;
            r->depth--;
            return items;
        }
        goto refused;
    }
refused:
    Py_DECREF(items);
    return NULL;
failed:
    Py_DECREF(items);
    return NULL;
}

/* Demographic at r->p: null, or an object whose Locale is null or a string. Sets *locale to a
 * new reference (Py_None for none, or an empty Locale). 0: the general path's (no exception),
 * -1: an exception. */
static int read_demographic(Reader *r, PyObject **locale) {
    *locale = Py_NewRef(Py_None);
    if (r->p < r->end && *r->p == 'n') return read_literal(r, "null", 4);
    if (r->p >= r->end || *r->p != '{') return 0;
    if (++r->depth > r->max_depth) return 0;
    r->p++;
    skip_ws(r);
    if (r->p < r->end && *r->p == '}') {
        r->p++;
        r->depth--;
        return 1;
    }
    int seen_locale = 0;
    for (;;) {
        Str key;
        if (!read_key(r, &key)) return 0;
        if (key_is(&key, "Locale", 6) && !key.escaped) {
            if (seen_locale++) return 0;
            if (r->p < r->end && *r->p == '"') {
                Str s;
                if (!read_string(r, &s) || s.escaped) return 0;
                if (s.length > 0) {
                    PyObject *text = new_text(&s);
                    if (text == NULL) return -1;
                    Py_SETREF(*locale, text);
                }
            } else if (!read_literal(r, "null", 4)) {
                return 0;
            }
        } else if (!read_value(r)) {
            return 0;
        }
        int more = next_member(r);
        if (more < 0) return 0;
        if (more == 0) break;
    }
    r->depth--;
    return 1;
}

/* One endpoint at r->p. Appends (endpoint_id, text, items, locale) to `endpoints` and adds its
 * locale to `locales`. 1: read, 0: the general path's, -1: an exception. */
static int read_endpoint(Reader *r, PyObject *body_view, PyObject *endpoint_id,
                         const Limits *limits, PyObject *endpoints, PyObject *seen,
                         PyObject *locales) {
    if (r->p >= r->end || *r->p != '{') return 0;
    const unsigned char *opened = r->p;
    if (++r->depth > r->max_depth) return 0;
    r->p++;
    skip_ws(r);
    PyObject *items = NULL, *locale = NULL;
    int status = 0, seen_demographic = 0;
    if (r->p < r->end && *r->p == '}') goto done; /* no RecommendationItems */
    for (;;) {
        Str key;
        if (!read_key(r, &key)) goto done;
        if (key.escaped) { /* `Recommendation\u0073`-like keys: the general path's */
            goto done;
        } else if (key_is(&key, "RecommendationItems", 19)) {
            if (items != NULL) goto done;
            items = read_items(r, limits, seen);
            if (items == NULL) {
                status = PyErr_Occurred() ? -1 : 0;
                goto done;
            }
        } else if (key_is(&key, "Demographic", 11)) {
            if (seen_demographic++) goto done;
            Py_CLEAR(locale);
            int read = read_demographic(r, &locale);
            if (read <= 0) {
                status = read;
                goto done;
            }
        } else if (key_is(&key, "Recommendations", 15)) {
            goto done; /* already there: the general path's */
        } else if (!read_value(r)) {
            goto done;
        }
        int more = next_member(r);
        if (more < 0) goto done;
        if (more == 0) break;
    }
    r->depth--;
    if (items == NULL) goto done;
    if (locale == NULL) locale = Py_NewRef(Py_None);
    PyObject *text = PySequence_GetSlice(body_view, opened - r->start, r->p - r->start);
    if (text == NULL) {
        status = -1;
        goto done;
    }
    PyObject *entry = PyTuple_Pack(4, endpoint_id, text, items, locale);
    Py_DECREF(text);
    if (entry == NULL || PyList_Append(endpoints, entry) < 0 || PySet_Add(locales, locale) < 0) {
        Py_XDECREF(entry);
        status = -1;
        goto done;
    }
    Py_DECREF(entry);
    status = 1;
done:
    Py_XDECREF(items);
    Py_XDECREF(locale);
    return status;
}

/* Endpoints at r->p. 1: read, 0: the general path's, -1: an exception. */
static int read_endpoints(Reader *r, PyObject *body_view, const Limits *limits,
                          Py_ssize_t max_endpoints, PyObject *endpoints, PyObject *seen,
                          PyObject *locales) {
    if (r->p >= r->end || *r->p != '{') return 0;
    if (++r->depth > r->max_depth) return 0;
    r->p++;
    skip_ws(r);
    if (r->p < r->end && *r->p == '}') return 0; /* no endpoints */
    PyObject *ids = PySet_New(NULL);
    if (ids == NULL) return -1;
    int status = 0;
    for (;;) {
        Str key;
        if (!read_key(r, &key)) goto done;
        if (PyList_GET_SIZE(endpoints) >= max_endpoints) goto done;
        /* The ID's value (its escapes decoded): a repeated one is the general path's to judge
         * (which of the two counts). */
        PyObject *value = key.escaped ? unescaped_bytes(&key)
                          : PyBytes_FromStringAndSize((const char *)key.start, key.length);
        if (value == NULL) {
            status = -1;
            goto done;
        }
        int repeated = PySet_Contains(ids, value);
        if (repeated == 0) repeated = PySet_Add(ids, value) < 0 ? -1 : 0;
        PyObject *endpoint_id = repeated != 0 ? NULL
            : PyUnicode_DecodeUTF8(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value), "strict");
        Py_DECREF(value);
        if (repeated != 0) {
            status = repeated < 0 ? -1 : 0;
            goto done;
        }
        if (endpoint_id == NULL) {
            status = -1;
            goto done;
        }
        int read = read_endpoint(r, body_view, endpoint_id, limits, endpoints, seen, locales);
        Py_DECREF(endpoint_id);
        if (read <= 0) {
            status = read;
            goto done;
        }
        int more = next_member(r);
        if (more < 0) goto done;
        if (more == 0) break;
    }
    r->depth--;
    status = 1;
done:
    Py_DECREF(ids);
    return status;
}

static PyObject *scan_event(PyObject *module, PyObject *args) {
    PyObject *body;
    Py_ssize_t max_endpoints, max_items, max_id_chars;
    int max_depth;
    if (!PyArg_ParseTuple(args, "O!nnni", &PyBytes_Type, &body, &max_endpoints, &max_items,
                          &max_id_chars, &max_depth))
        return NULL;
    Reader r;
    r.start = r.p = (const unsigned char *)PyBytes_AS_STRING(body);
    r.end = r.start + PyBytes_GET_SIZE(body);
    r.depth = 0;
    r.max_depth = max_depth;
    Limits limits = {max_items, max_id_chars};

    PyObject *body_view = NULL, *endpoints = NULL, *seen = NULL, *locales = NULL;
    PyObject *application_id = Py_NewRef(Py_None), *result = NULL;
    int have_endpoints = 0, have_application = 0, read = 0;

    /* A leading byte order mark is the general path's (it strips it). */
    skip_ws(&r);
    if (r.p >= r.end || *r.p != '{') goto done;
    if (++r.depth > r.max_depth) goto done;
    r.p++;
    skip_ws(&r);
    if (r.p < r.end && *r.p == '}') goto done;
    if ((body_view = PyMemoryView_FromObject(body)) == NULL
        || (endpoints = PyList_New(0)) == NULL || (seen = PyDict_New()) == NULL
        || (locales = PySet_New(NULL)) == NULL)
        goto failed;
    for (;;) {
        Str key;
        if (!read_key(&r, &key)) goto done;
        if (key.escaped) goto done;
        if (key_is(&key, "Endpoints", 9)) {
            if (have_endpoints++) goto done;
            read = read_endpoints(&r, body_view, &limits, max_endpoints, endpoints, seen,
                                  locales);
            if (read < 0) goto failed;
            if (read == 0) goto done;
        } else if (key_is(&key, "ApplicationId", 13)) {
            if (have_application++) goto done;
            if (r.p < r.end && *r.p == '"') {
                Str s;
                if (!read_string(&r, &s) || s.escaped) goto done;
                if (s.length > 0) {
                    PyObject *text = new_text(&s);
                    if (text == NULL) goto failed;
                    Py_SETREF(application_id, text);
                }
            } else {
                goto done; /* not a string: the general path says what is wrong */
            }
        } else if (!read_value(&r)) {
            goto done;
        }
        int more = next_member(&r);
        if (more < 0) goto done;
        if (more == 0) break;
    }
    skip_ws(&r);
    if (r.p != r.end || !have_endpoints) goto done;
    PyObject *item_ids = PyDict_Keys(seen);
    if (item_ids == NULL) goto failed;
    result = PyTuple_Pack(4, application_id, endpoints, item_ids, locales);
    Py_DECREF(item_ids);
    goto cleanup;
done:
    result = Py_NewRef(Py_None);
    goto cleanup;
failed:
    result = NULL;
cleanup:
    Py_XDECREF(body_view);
    Py_XDECREF(endpoints);
    Py_XDECREF(seen);
    Py_XDECREF(locales);
    Py_DECREF(application_id);
    return result;
}

/* ------------------------------------------------------------------------------------------ */
/* Writing                                                                                      */

typedef struct {
    char *data;
    Py_ssize_t length;
    Py_ssize_t capacity;
} Buffer;

static int grow(Buffer *b, Py_ssize_t more) {
    if (b->length + more <= b->capacity) return 0;
    Py_ssize_t capacity = b->capacity ? b->capacity : 4096;
    while (capacity < b->length + more) capacity *= 2;
    char *data = PyMem_Realloc(b->data, capacity);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->capacity = capacity;
    return 0;
}

static inline int put(Buffer *b, const char *data, Py_ssize_t length) {
    if (grow(b, length) < 0) return -1;
    memcpy(b->data + b->length, data, length);
    b->length += length;
    return 0;
}

static inline int put_bytes(Buffer *b, PyObject *bytes) {
    return put(b, PyBytes_AS_STRING(bytes), PyBytes_GET_SIZE(bytes));
}

/* A str's JSON string contents (no quotes), escaped as orjson escapes them. */
static int put_json_contents(Buffer *b, PyObject *text) {
    Py_ssize_t length;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &length);
    if (utf8 == NULL) return -1;
    Py_ssize_t plain = 0;
    for (Py_ssize_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)utf8[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        if (put(b, utf8 + plain, i - plain) < 0) return -1;
        char escape[7];
        Py_ssize_t size = 2;
        escape[0] = '\\';
        switch (c) {
        case '"': escape[1] = '"'; break;
        case '\\': escape[1] = '\\'; break;
        case '\b': escape[1] = 'b'; break;
        case '\f': escape[1] = 'f'; break;
        case '\n': escape[1] = 'n'; break;
        case '\r': escape[1] = 'r'; break;
        case '\t': escape[1] = 't'; break;
        default:
            snprintf(escape + 1, 6, "u%04x", c);
            size = 6;
        }
        if (put(b, escape, size) < 0) return -1;
        plain = i + 1;
    }
    return put(b, utf8 + plain, length - plain);
}

/* plain_row(item, fields, placeholders): the transform's JSON row of an item for a recommender
 * whose attributes are all plain text fields (Enricher.json_row's shortcut): for each field,
 * item[field] (its placeholder when None) written as orjson writes it, each a bytes object of
 * its own size. None when a value is neither a str nor None, or is a str orjson would refuse
 * (a lone surrogate): the caller then renders the row in Python, which answers or fails as it
 * always did. */
static PyObject *plain_row(PyObject *module, PyObject *args) {
    PyObject *item, *fields, *placeholders;
    if (!PyArg_ParseTuple(args, "OO!O!", &item, &PyTuple_Type, &fields, &PyTuple_Type,
                          &placeholders))
        return NULL;
    Py_ssize_t count = PyTuple_GET_SIZE(fields);
    if (PyTuple_GET_SIZE(placeholders) != count) {
        PyErr_SetString(PyExc_ValueError, "one placeholder per field");
        return NULL;
    }
    PyObject *row = PyTuple_New(count);
    if (row == NULL) return NULL;
    Buffer b = {NULL, 0, 0};
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *value = PyObject_GetItem(item, PyTuple_GET_ITEM(fields, i));
        if (value == NULL) goto fail;
        if (value == Py_None) {
            Py_DECREF(value);
            value = PyTuple_GET_ITEM(placeholders, i);
            Py_INCREF(value);
        }
        PyObject *bytes;
        if (value == Py_None) {
            bytes = PyBytes_FromStringAndSize("null", 4);
        } else if (PyUnicode_CheckExact(value)) {
            b.length = 0;
            if (put(&b, "\"", 1) < 0 || put_json_contents(&b, value) < 0 || put(&b, "\"", 1) < 0) {
                Py_DECREF(value);
                if (!PyErr_ExceptionMatches(PyExc_UnicodeError)) goto fail;
                PyErr_Clear();  /* orjson's message, not ours: the Python path says it */
                goto python;
            }
            bytes = PyBytes_FromStringAndSize(b.data, b.length);
        } else {
            Py_DECREF(value);
            goto python;
        }
        Py_DECREF(value);
        if (bytes == NULL) goto fail;
        PyTuple_SET_ITEM(row, i, bytes);
    }
    PyMem_Free(b.data);
    return row;
python:
    PyMem_Free(b.data);
    Py_DECREF(row);
    Py_RETURN_NONE;
fail:
    PyMem_Free(b.data);
    Py_DECREF(row);
    return NULL;
}

static PyObject *splice_answer(PyObject *module, PyObject *args) {
    PyObject *endpoints, *kept, *own, *pieces, *first, *by_locale = Py_None;
    Py_ssize_t cap;
    if (!PyArg_ParseTuple(args, "O!O!OO!O!n|O", &PyList_Type, &endpoints, &PyDict_Type, &kept,
                          &own, &PyTuple_Type, &pieces, &PyTuple_Type, &first, &cap,
                          &by_locale))
        return NULL;
    if (own != Py_None && !PyDict_Check(own)) {
        PyErr_SetString(PyExc_TypeError, "own must be a dict or None");
        return NULL;
    }
    if (by_locale != Py_None && !PyDict_Check(by_locale)) {
        PyErr_SetString(PyExc_TypeError, "by_locale must be a dict or None");
        return NULL;
    }
    Py_ssize_t attributes = PyTuple_GET_SIZE(first);
    if (PyTuple_GET_SIZE(pieces) != attributes + 3 || cap < 1 || attributes < 1) {
        PyErr_SetString(PyExc_ValueError, "pieces must hold one text per attribute and three more");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < attributes + 3; i++) {
        if (!PyBytes_Check(PyTuple_GET_ITEM(pieces, i))) {
            PyErr_SetString(PyExc_TypeError, "pieces must be bytes");
            return NULL;
        }
    }
    PyObject **rows = PyMem_New(PyObject *, cap);
    char *alone = PyMem_Malloc(attributes);
    if (rows == NULL || alone == NULL) {
        PyMem_Free(rows);
        PyMem_Free(alone);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t a = 0; a < attributes; a++) {
        int flag = PyObject_IsTrue(PyTuple_GET_ITEM(first, a));
        if (flag < 0) {
            PyMem_Free(rows);
            PyMem_Free(alone);
            return NULL;
        }
        alone[a] = (char)flag;
    }
    Buffer b = {NULL, 0, 0};
    Py_ssize_t unresolved = 0, served = 0;
    Py_ssize_t count = PyList_GET_SIZE(endpoints);
    for (Py_ssize_t e = 0; e < count; e++) {
        PyObject *entry = PyList_GET_ITEM(endpoints, e);
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) < 3) {
            PyErr_SetString(PyExc_TypeError, "an endpoint must be (id, text, items, ...)");
            goto failed;
        }
        PyObject *items = PyTuple_GET_ITEM(entry, 2);
        if (!PyList_Check(items)) {
            PyErr_SetString(PyExc_TypeError, "an endpoint's items must be a list");
            goto failed;
        }
        PyObject *kept_here = kept, *own_here = own;
        if (by_locale != Py_None) {
            /* This endpoint's locale's pair of dicts (its locale: the entry's fourth item). */
            PyObject *pair = PyTuple_GET_SIZE(entry) < 4 ? NULL
                : PyDict_GetItemWithError(by_locale, PyTuple_GET_ITEM(entry, 3));
            if (pair == NULL || !PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2
                    || !PyDict_Check(PyTuple_GET_ITEM(pair, 0))
                    || (PyTuple_GET_ITEM(pair, 1) != Py_None
                        && !PyDict_Check(PyTuple_GET_ITEM(pair, 1)))) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_ValueError,
                                    "by_locale must map every endpoint's locale to (dict, dict)");
                goto failed;
            }
            kept_here = PyTuple_GET_ITEM(pair, 0);
            own_here = PyTuple_GET_ITEM(pair, 1);
        }
        Py_ssize_t found = 0;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items) && found < cap; i++) {
            PyObject *id = PyList_GET_ITEM(items, i);
            PyObject *row = PyDict_GetItemWithError(kept_here, id);
            if (row == NULL && !PyErr_Occurred() && own_here != Py_None)
                row = PyDict_GetItemWithError(own_here, id);
            if (row == NULL) {
                if (PyErr_Occurred()) goto failed;
                continue; /* neither kept nor rendered: not in the catalog */
            }
            if (!PyTuple_Check(row)) continue; /* False: not an item a message may show */
            if (PyTuple_GET_SIZE(row) != attributes) {
                PyErr_SetString(PyExc_ValueError, "a row must hold one value per attribute");
                goto failed;
            }
            rows[found++] = row;
        }
        if (found == 0) {
            unresolved++;
            continue;
        }
        /* A memoryview (scanned here) or any buffer (msgspec.Raw) of the endpoint's text. */
        Py_buffer text;
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(entry, 1), &text, PyBUF_SIMPLE) < 0)
            goto failed;
        int bad = text.len < 2;
        if (!bad) {
            bad = (served == 0 ? put(&b, "{\"", 2) : put_bytes(&b, PyTuple_GET_ITEM(pieces, 0)))
                  || put_json_contents(&b, PyTuple_GET_ITEM(entry, 0))
                  || put_bytes(&b, PyTuple_GET_ITEM(pieces, 1))
                  || put(&b, text.buf, text.len - 1); /* without its closing brace */
        } else {
            PyErr_SetString(PyExc_ValueError, "an endpoint's text is too short");
        }
        PyBuffer_Release(&text);
        if (bad) goto failed;
        for (Py_ssize_t a = 0; a < attributes; a++) {
            if (put_bytes(&b, PyTuple_GET_ITEM(pieces, 2 + a)) < 0) goto failed;
            Py_ssize_t shown = alone[a] ? 1 : found;
            for (Py_ssize_t k = 0; k < shown; k++) {
                PyObject *value = PyTuple_GET_ITEM(rows[k], a);
                if (!PyBytes_Check(value)) {
                    PyErr_SetString(PyExc_TypeError, "a row's values must be bytes");
                    goto failed;
                }
                if ((k && put(&b, ",", 1) < 0) || put_bytes(&b, value) < 0) goto failed;
            }
        }
        if (put_bytes(&b, PyTuple_GET_ITEM(pieces, attributes + 2)) < 0) goto failed;
        served++;
    }
    if (served == 0) {
        if (put(&b, "{}", 2) < 0) goto failed;
    } else if (put(&b, "}", 1) < 0) {
        goto failed;
    }
    PyMem_Free(rows);
    PyMem_Free(alone);
    PyObject *answer = PyBytes_FromStringAndSize(b.data, b.length);
    PyMem_Free(b.data);
    if (answer == NULL) return NULL;
    return Py_BuildValue("(Nn)", answer, unresolved);
failed:
    PyMem_Free(rows);
    PyMem_Free(alone);
    PyMem_Free(b.data);
    return NULL;
}

static PyMethodDef methods[] = {
    {"scan_event", scan_event, METH_VARARGS,
     "scan_event(body, max_endpoints, max_items, max_id_chars, max_depth): "
     "(application_id, endpoints, item_ids, locales), or None for the general path."},
    {"plain_row", plain_row, METH_VARARGS,
     "plain_row(item, fields, placeholders) -> the JSON row of plain text fields, or None"},
    {"splice_answer", splice_answer, METH_VARARGS,
     "splice_answer(endpoints, kept, own, pieces, first, cap[, by_locale]): "
     "(answer bytes, unresolved)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_speedups",
    "The transform's hot loops in C (see service/_speedups.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    init_stops();
    return PyModule_Create(&module);
}
