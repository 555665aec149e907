"""gridd hub: the server and its parts (jobs and workers, durable jobs,
names), the scheduler, the journal, and the client library."""
