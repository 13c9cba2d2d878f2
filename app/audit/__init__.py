"""The audit log: who changed what in a workspace, recorded in the transaction of the change."""
