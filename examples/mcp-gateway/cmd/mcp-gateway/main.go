// Command mcp-gateway serves the cpex MCP gateway (package gateway) over stdio, or
// over streamable HTTP with -http.
//
//	go run ./mcp-gateway/cmd/mcp-gateway                      # stdio, the embedded plugins.yaml
//	go run ./mcp-gateway/cmd/mcp-gateway -http localhost:8080 # streamable HTTP at http://localhost:8080/
//	go run ./mcp-gateway/cmd/mcp-gateway -config my-plugins.yaml
package main

import (
	"context"
	"errors"
	"flag"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	gateway "github.com/cpex-dev/cpex/examples/mcp-gateway"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func main() {
	configFile := flag.String("config", "", "plugin config file (default: the embedded plugins.yaml)")
	httpAddr := flag.String("http", "", "serve streamable HTTP on this address (default: stdio)")
	flag.Parse()
	log.SetOutput(os.Stderr) // stdout is the MCP stream over stdio
	if err := run(*configFile, *httpAddr); err != nil {
		log.Fatal(err)
	}
}

func run(configFile, httpAddr string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	plugins, err := gateway.StartPlugins(configFile)
	if err != nil {
		return err
	}
	defer plugins.Shutdown()
	server := gateway.NewServer(plugins)

	if httpAddr == "" {
		err := server.Run(ctx, &mcp.StdioTransport{})
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	}
	handler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
	httpServer := &http.Server{Addr: httpAddr, Handler: handler}
	go func() {
		<-ctx.Done()
		_ = httpServer.Shutdown(context.Background())
	}()
	log.Printf("%s: streamable HTTP on http://%s/", gateway.ServerName, httpAddr)
	if err := httpServer.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
