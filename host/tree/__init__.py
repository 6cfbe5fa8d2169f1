"""The DM tree model, TNDS, canonical bytes, diff/apply, secrets, and safe XML.

Import from the submodules or from here:
    from host.tree import DMTree, DMNode, read_tnds, write_tnds, canonical_bytes
"""
from host.tree.canonical import canonical_bytes, from_canonical
from host.tree.model import (
                             ACL_COMMANDS,
                             DEFAULT_ROOT_ACL,
                             FORMATS,
                             Acl,
                             DMNode,
                             DMTree,
                             NodeExists,
                             NodeNotFound,
                             NotAllowed,
)
from host.tree.ops import Change, apply_restore, diff, render_diff, select
from host.tree.secrets import merge_keep_secrets, secret_uris, strip_secrets
from host.tree.tnds import (
                             ALL_PROPS,
                             TNDS_MIME_XML,
                             TNDS_NS,
                             export_tnds,
                             import_tnds,
                             parse_list_query,
                             read_tnds,
                             write_tnds,
)
from host.tree.uri import (
                             InvalidUri,
                             join_uri,
                             normalize_uri,
                             parent_uri,
                             split_query,
                             split_uri,
)

__all__ = [
                             "ACL_COMMANDS",
                             "ALL_PROPS",
                             "DEFAULT_ROOT_ACL",
                             "FORMATS",
                             "TNDS_MIME_XML",
                             "TNDS_NS",
                             "Acl",
                             "Change",
                             "DMNode",
                             "DMTree",
                             "InvalidUri",
                             "NodeExists",
                             "NodeNotFound",
                             "NotAllowed",
                             "apply_restore",
                             "canonical_bytes",
                             "diff",
                             "export_tnds",
                             "from_canonical",
                             "import_tnds",
                             "join_uri",
                             "merge_keep_secrets",
                             "normalize_uri",
                             "parent_uri",
                             "parse_list_query",
                             "read_tnds",
                             "render_diff",
                             "secret_uris",
                             "select",
                             "split_query",
                             "split_uri",
                             "strip_secrets",
                             "write_tnds",
]
