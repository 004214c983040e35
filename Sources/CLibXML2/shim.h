// libxml2 (Debian's libxml2-dev): the parser's own error text, line and column for definition
// files, which Foundation's XMLParser on Linux reduces to an error number.
//
// The few declarations needed, from libxml/parser.h and libxml/xmlerror.h (stable ABI since
// libxml2 2.6), rather than those headers: they pull in ICU's, which clash with the copy
// Foundation ships as a module.
#ifndef VIREO_CLIBXML2_SHIM_H
#define VIREO_CLIBXML2_SHIM_H

/// xmlError (libxml/xmlerror.h), field for field.
typedef struct {
    int domain;
    int code;
    char *message;
    int level;
    char *file;
    int line;
    char *str1;
    char *str2;
    char *str3;
    int int1;
    int int2;  // the column
    void *ctxt;
    void *node;
} vireo_xml_error;

enum {
    VIREO_XML_PARSE_NOERROR = 1 << 5,
    VIREO_XML_PARSE_NOWARNING = 1 << 6,
    VIREO_XML_PARSE_NONET = 1 << 11,
};

typedef void (*vireo_xml_structured_error_func)(void *context, vireo_xml_error *error);

void xmlInitParser(void);
void xmlSetStructuredErrorFunc(void *context, vireo_xml_structured_error_func handler);
void *xmlReadMemory(const char *buffer, int size, const char *url, const char *encoding, int options);
void xmlFreeDoc(void *document);
vireo_xml_error *xmlGetLastError(void);
void xmlResetLastError(void);

#endif
