"""The index lifecycle: guards, concurrent builds, verification and revert, index health, leadership."""
