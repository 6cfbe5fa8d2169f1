/*
 * A DMAcc management object for libdmclient's testdmclient whose account is a
 * provisioning file, the way a device is bootstrapped: server address, ServerID,
 * credentials and nonces (simvault test data; not part of libdmclient).
 *
 * testdmclient ships a DMAcc plugin with the account compiled in (address
 * http://127.0.0.1:8080/funambol/dm, no persistent nonces). This one reads the
 * file named by $SIMVAULT_DMACC and writes every change (Add, Replace, Delete,
 * ACL) back to it, so the nonces a server hands out survive from one
 * testdmclient run to the next, as on a real device. setACL is needed for Add:
 * libdmclient's dmtree_add checks the parent's ACL for Add, which cuts that ACL
 * string at its first '&' (prv_check_access_rights writes into it), so its
 * Replace check then fails and it sets an ACL on the new node.
 *
 * File format, one node per line, tab separated:
 *     leaf<TAB>URI<TAB>ACL<TAB>VALUE
 *     node<TAB>URI<TAB>ACL
 * ACL "-" inherits the parent's. Interior nodes not listed are derived from
 * the leaves (ACL inherited). Values are percent-escaped (%XX for bytes below
 * 0x21, above 0x7E and '%'): nonces are binary. The children of ./DMAcc carry
 * the DMAcc URN. Licence: Apache-2.0, like libdmclient's dmcore.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omadmtree_mo.h>
#include "syncml_error.h"

#define BASE_URI "./DMAcc"
#define DMACC_URN "urn:oma:mo:oma-dm-dmacc:1.0"
#define MAX_NODES 256

typedef struct {
    char * uri;
    char * acl;          /* NULL: inherited */
    int leaf;
    char * value;        /* leaves: raw bytes */
    unsigned int size;
} node_t;

typedef struct {
    char * path;
    node_t nodes[MAX_NODES];
    int count;
} account_t;

static node_t * prv_find(account_t * acc, const char * uri)
{
    int i;
    for (i = 0; i < acc->count; i++)
        if (!strcmp(acc->nodes[i].uri, uri)) return &acc->nodes[i];
    return NULL;
}

static node_t * prv_add(account_t * acc, const char * uri, int leaf)
{
    node_t * n = prv_find(acc, uri);
    if (n) return n;
    if (acc->count >= MAX_NODES) return NULL;
    n = &acc->nodes[acc->count++];
    memset(n, 0, sizeof(*n));
    n->uri = strdup(uri);
    n->leaf = leaf;
    return n;
}

/* every ancestor of uri up to ./DMAcc exists as an interior node */
static void prv_add_parents(account_t * acc, const char * uri)
{
    char * copy = strdup(uri);
    char * slash;
    while ((slash = strrchr(copy, '/')) != NULL && slash - copy >= (long)strlen(BASE_URI)) {
        *slash = 0;
        prv_add(acc, copy, 0);
    }
    free(copy);
}

static char * prv_unescape(const char * text, unsigned int * size)
{
    char * out = malloc(strlen(text) + 1);
    unsigned int n = 0;
    while (out && *text) {
        unsigned int byte;
        if (text[0] == '%' && sscanf(text + 1, "%2x", &byte) == 1) {
            out[n++] = (char)byte;
            text += 3;
        } else {
            out[n++] = *text++;
        }
    }
    if (out) out[n] = 0;
    *size = n;
    return out;
}

static int prv_save(account_t * acc)
{
    char tmp[4096];
    FILE * f;
    int i;
    unsigned int j;

    snprintf(tmp, sizeof(tmp), "%s.tmp", acc->path);
    f = fopen(tmp, "w");
    if (!f) return OMADM_SYNCML_ERROR_COMMAND_FAILED;
    for (i = 0; i < acc->count; i++) {
        node_t * n = &acc->nodes[i];
        fprintf(f, "%s\t%s\t%s", n->leaf ? "leaf" : "node", n->uri, n->acl ? n->acl : "-");
        if (n->leaf) {
            fputc('\t', f);
            for (j = 0; j < n->size; j++) {
                unsigned char c = (unsigned char)n->value[j];
                if (c <= 0x20 || c > 0x7E || c == '%') fprintf(f, "%%%02X", c);
                else fputc(c, f);
            }
        }
        fputc('\n', f);
    }
    if (fclose(f) != 0 || rename(tmp, acc->path) != 0) return OMADM_SYNCML_ERROR_COMMAND_FAILED;
    return OMADM_SYNCML_ERROR_NONE;
}

static int prv_init(void ** oData)
{
    const char * path = getenv("SIMVAULT_DMACC");
    account_t * acc;
    FILE * f;
    char line[4096];

    if (!path) {
        fprintf(stderr, "dmacc_file: set SIMVAULT_DMACC to the DM account file\n");
        return OMADM_SYNCML_ERROR_COMMAND_FAILED;
    }
    f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "dmacc_file: cannot read %s\n", path);
        return OMADM_SYNCML_ERROR_COMMAND_FAILED;
    }
    acc = calloc(1, sizeof(account_t));
    if (!acc) { fclose(f); return OMADM_SYNCML_ERROR_DEVICE_FULL; }
    acc->path = strdup(path);
    prv_add(acc, BASE_URI, 0);
    while (fgets(line, sizeof(line), f)) {
        char * kind = strtok(line, "\t\r\n");
        char * uri = strtok(NULL, "\t\r\n");
        char * acl = strtok(NULL, "\t\r\n");
        char * value = strtok(NULL, "\r\n");
        node_t * n;
        if (!kind || !uri || kind[0] == '#') continue;
        prv_add_parents(acc, uri);
        n = prv_add(acc, uri, !strcmp(kind, "leaf"));
        if (!n) break;
        if (acl && strcmp(acl, "-")) n->acl = strdup(acl);
        if (n->leaf) n->value = prv_unescape(value ? value : "", &n->size);
    }
    fclose(f);
    *oData = acc;
    return OMADM_SYNCML_ERROR_NONE;
}

static int prv_is_node(const char * iURI, omadmtree_node_kind_t * oType, void * data)
{
    node_t * n = prv_find((account_t *)data, iURI);
    *oType = !n ? OMADM_NODE_NOT_EXIST : n->leaf ? OMADM_NODE_IS_LEAF : OMADM_NODE_IS_INTERIOR;
    return OMADM_SYNCML_ERROR_NONE;
}

/* the names of uri's children, "a/b/c" */
static char * prv_children(account_t * acc, const char * uri)
{
    size_t len = strlen(uri), total = 1;
    char * out;
    int i;
    for (i = 0; i < acc->count; i++) total += strlen(acc->nodes[i].uri) + 1;
    out = calloc(1, total);
    for (i = 0; out && i < acc->count; i++) {
        const char * u = acc->nodes[i].uri;
        if (!strncmp(u, uri, len) && u[len] == '/' && !strchr(u + len + 1, '/')) {
            if (out[0]) strcat(out, "/");
            strcat(out, u + len + 1);
        }
    }
    return out;
}

static int prv_get(dmtree_node_t * nodeP, void * data)
{
    account_t * acc = (account_t *)data;
    node_t * n = prv_find(acc, nodeP->uri);
    if (!n) return OMADM_SYNCML_ERROR_NOT_FOUND;
    if (n->leaf) {
        nodeP->format = strdup("chr");
        nodeP->type = strdup("text/plain");
        nodeP->data_buffer = malloc(n->size + 1);
        if (!nodeP->data_buffer) return OMADM_SYNCML_ERROR_DEVICE_FULL;
        memcpy(nodeP->data_buffer, n->value, n->size);
        nodeP->data_buffer[n->size] = 0;
        nodeP->data_size = n->size;
    } else {
        nodeP->format = strdup("node");
        nodeP->data_buffer = prv_children(acc, n->uri);
        nodeP->data_size = nodeP->data_buffer ? strlen(nodeP->data_buffer) : 0;
    }
    return OMADM_SYNCML_ERROR_NONE;
}

static int prv_set(const dmtree_node_t * nodeP, void * data)
{
    account_t * acc = (account_t *)data;
    node_t * n = prv_find(acc, nodeP->uri);
    int interior = nodeP->format && !strcmp(nodeP->format, "node");
    if (n && !n->leaf) return interior ? OMADM_SYNCML_ERROR_NONE : OMADM_SYNCML_ERROR_NOT_ALLOWED;
    if (!n) {
        prv_add_parents(acc, nodeP->uri);
        n = prv_add(acc, nodeP->uri, !interior);
        if (!n) return OMADM_SYNCML_ERROR_DEVICE_FULL;
        if (interior) return prv_save(acc);
    }
    free(n->value);
    n->value = malloc(nodeP->data_size + 1);
    if (!n->value) return OMADM_SYNCML_ERROR_DEVICE_FULL;
    memcpy(n->value, nodeP->data_buffer, nodeP->data_size);
    n->size = nodeP->data_size;
    return prv_save(acc);
}

static int prv_get_acl(const char * iURI, char ** oValue, void * data)
{
    node_t * n = prv_find((account_t *)data, iURI);
    *oValue = NULL;
    if (!n) return OMADM_SYNCML_ERROR_NOT_FOUND;
    if (n->acl) *oValue = strdup(n->acl);
    return OMADM_SYNCML_ERROR_NONE;
}

static int prv_set_acl(const char * iURI, const char * acl, void * data)
{
    account_t * acc = (account_t *)data;
    node_t * n = prv_find(acc, iURI);
    if (!n) return OMADM_SYNCML_ERROR_NOT_FOUND;
    free(n->acl);
    n->acl = acl && acl[0] ? strdup(acl) : NULL;
    return prv_save(acc);
}

/* uri and everything under it */
static int prv_delete(const char * iURI, void * data)
{
    account_t * acc = (account_t *)data;
    size_t len = strlen(iURI);
    int i, kept = 0;
    if (!prv_find(acc, iURI) || !strcmp(iURI, BASE_URI)) return OMADM_SYNCML_ERROR_NOT_FOUND;
    for (i = 0; i < acc->count; i++) {
        node_t * n = &acc->nodes[i];
        if (!strncmp(n->uri, iURI, len) && (n->uri[len] == 0 || n->uri[len] == '/')) {
            free(n->uri);
            free(n->acl);
            free(n->value);
        } else {
            acc->nodes[kept++] = *n;
        }
    }
    acc->count = kept;
    return prv_save(acc);
}

static int prv_find_urn(const char * iURN, char *** oURL, void * data)
{
    account_t * acc = (account_t *)data;
    size_t len = strlen(BASE_URI);
    int i, count = 0;
    *oURL = NULL;
    if (strcmp(iURN, DMACC_URN)) return OMADM_SYNCML_ERROR_NOT_FOUND;
    *oURL = calloc(acc->count + 1, sizeof(char *));
    if (!*oURL) return OMADM_SYNCML_ERROR_DEVICE_FULL;
    for (i = 0; i < acc->count; i++) {
        const char * u = acc->nodes[i].uri;
        if (!acc->nodes[i].leaf && !strncmp(u, BASE_URI, len) && u[len] == '/' && !strchr(u + len + 1, '/'))
            (*oURL)[count++] = strdup(u);
    }
    if (count == 0) { free(*oURL); *oURL = NULL; return OMADM_SYNCML_ERROR_NOT_FOUND; }
    return OMADM_SYNCML_ERROR_NONE;
}

static void prv_close(void * data)
{
    account_t * acc = (account_t *)data;
    int i;
    if (!acc) return;
    for (i = 0; i < acc->count; i++) {
        free(acc->nodes[i].uri);
        free(acc->nodes[i].acl);
        free(acc->nodes[i].value);
    }
    free(acc->path);
    free(acc);
}

omadm_mo_interface_t * omadm_get_mo_interface(void)
{
    omadm_mo_interface_t * mo = calloc(1, sizeof(*mo));
    if (mo) {
        mo->base_uri = strdup(BASE_URI);
        mo->initFunc = prv_init;
        mo->closeFunc = prv_close;
        mo->isNodeFunc = prv_is_node;
        mo->findURNFunc = prv_find_urn;
        mo->getFunc = prv_get;
        mo->setFunc = prv_set;
        mo->getACLFunc = prv_get_acl;
        mo->setACLFunc = prv_set_acl;
        mo->deleteFunc = prv_delete;
    }
    return mo;
}
