"""Agentless backup and restore: any OMA DM 1.2 device, read and written with standard commands.

config   the server key, the recipients, the caps (``dm server --server-key ...``)
reader   reads a device's tree: Get ?list=TNDS, ?list=StructData, or a node-by-node walk
restore  a diff against the live tree -> Add/Replace/Delete (Atomic when honoured), read-back
plugin   the ServerPlugin that runs backup and restore jobs with them (docs/DM.md,
         "Devices without simvault")
"""
