// The demo's Thrift service: a backend names itself in every reply.
service Echo {
    string echo(1: string message)
    oneway void note(1: string message)
}
