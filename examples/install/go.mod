module example.com/gateway

go 1.24

require github.com/cpex-dev/cpex/sdk-go v0.0.0

require (
	github.com/vmihailenco/msgpack/v5 v5.4.1 // indirect
	github.com/vmihailenco/tagparser/v2 v2.0.0 // indirect
)

// Until sdk-go is published: its source in a cpex checkout (README, "Install").
replace github.com/cpex-dev/cpex/sdk-go => ../../sdk-go
