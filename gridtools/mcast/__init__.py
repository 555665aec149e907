"""gridmcast: reliable one-to-many delivery, sender and receiver."""
