"""The Features tab: a feature's page, layout and callbacks (`tab`), its figures and HTML
(`view`)."""
