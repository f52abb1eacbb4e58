"""`indexd status`: what each database says about itself (`report`), and which daemon may be asked for what only
it knows: the process holding the database's leader lock (`daemon`)."""
