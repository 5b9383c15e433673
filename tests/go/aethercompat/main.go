// aethercompat drives the seed's store/jetstream.go (compiled verbatim) for
// tests/test_go_compat.py, so the Python toolkit is checked against the real
// Go store code in both directions. Every mode prints JSON lines on stdout.
//
//	aethercompat write   [-namespace NS] URL STREAM         stdin: {"event":{...}} | {"snapshot":{...}} per line
//	aethercompat read    [-namespace NS] URL STREAM ACTOR... one result object per actor
//	aethercompat marshal                                    stdin as for write; prints json.Marshal per line
//
// Numbers in the input's data/state become the Go type a Go program would
// hold for them: int64 (or uint64) when integral, float64 otherwise.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"git.flowmade.one/flowmade-one/aether"
	"git.flowmade.one/flowmade-one/aether/store"
	"github.com/nats-io/nats.go"
)

type input struct {
	Event    *aether.Event         `json:"event"`
	Snapshot *aether.ActorSnapshot `json:"snapshot"`
}

type conflict struct {
	ActorID          string `json:"actorId"`
	AttemptedVersion int64  `json:"attemptedVersion"`
	CurrentVersion   int64  `json:"currentVersion"`
}

type writeResult struct {
	Line     int       `json:"line"`
	OK       bool      `json:"ok"`
	Error    string    `json:"error,omitempty"`
	Conflict *conflict `json:"versionConflict,omitempty"`
}

type replayError struct {
	SequenceNumber uint64 `json:"sequenceNumber"`
	RawData        []byte `json:"rawData"`
	Error          string `json:"error"`
}

type readResult struct {
	ActorID            string                `json:"actorId"`
	Events             []*aether.Event       `json:"events"`
	EventNanos         []int64               `json:"eventNanos"`
	Errors             []replayError         `json:"errors"`
	EventsError        string                `json:"eventsError,omitempty"`
	LatestVersion      int64                 `json:"latestVersion"`
	LatestVersionError string                `json:"latestVersionError,omitempty"`
	Snapshot           *aether.ActorSnapshot `json:"snapshot"`
	SnapshotNanos      int64                 `json:"snapshotNanos"`
	SnapshotError      string                `json:"snapshotError,omitempty"`
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	mode, args := os.Args[1], os.Args[2:]
	flags := flag.NewFlagSet(mode, flag.ExitOnError)
	namespace := flags.String("namespace", "", "the store's namespace")
	_ = flags.Parse(args)
	args = flags.Args()
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	switch mode {
	case "write":
		if len(args) != 2 {
			usage()
		}
		write(open(args[0], args[1], *namespace), out)
	case "read":
		if len(args) < 2 {
			usage()
		}
		read(open(args[0], args[1], *namespace), args[2:], out)
	case "marshal":
		marshal(out)
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: aethercompat write|read|marshal [-namespace NS] [URL STREAM [ACTOR...]]")
	os.Exit(2)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "aethercompat:", err)
	os.Exit(1)
}

func open(url, stream, namespace string) *store.JetStreamEventStore {
	nc, err := nats.Connect(url)
	if err != nil {
		fail(err)
	}
	config := store.DefaultJetStreamConfig()
	config.Namespace = namespace
	es, err := store.NewJetStreamEventStoreWithConfig(nc, stream, config)
	if err != nil {
		fail(err)
	}
	return es
}

// inputs reads stdin's JSON lines, numbers kept exact until naturalised.
func inputs(each func(int, *input)) {
	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 1<<20), 64<<20)
	line := 0
	for scanner.Scan() {
		text := bytes.TrimSpace(scanner.Bytes())
		if len(text) == 0 {
			continue
		}
		line++
		decoder := json.NewDecoder(bytes.NewReader(text))
		decoder.UseNumber()
		var in input
		if err := decoder.Decode(&in); err != nil {
			fail(fmt.Errorf("input line %d: %w", line, err))
		}
		if in.Event != nil {
			in.Event.Data = naturalMap(in.Event.Data)
		}
		if in.Snapshot != nil {
			in.Snapshot.State = naturalMap(in.Snapshot.State)
		}
		each(line, &in)
	}
	if err := scanner.Err(); err != nil {
		fail(err)
	}
}

func naturalMap(m map[string]interface{}) map[string]interface{} {
	if m == nil {
		return nil
	}
	for key, value := range m {
		m[key] = natural(value)
	}
	return m
}

func natural(value interface{}) interface{} {
	switch v := value.(type) {
	case json.Number:
		text := string(v)
		if !strings.ContainsAny(text, ".eE") {
			if i, err := strconv.ParseInt(text, 10, 64); err == nil {
				return i
			}
			if u, err := strconv.ParseUint(text, 10, 64); err == nil {
				return u
			}
		}
		f, err := v.Float64()
		if err != nil {
			fail(err)
		}
		return f
	case map[string]interface{}:
		return naturalMap(v)
	case []interface{}:
		for i := range v {
			v[i] = natural(v[i])
		}
		return v
	default:
		return value
	}
}

func emit(out *bufio.Writer, value interface{}) {
	data, err := json.Marshal(value)
	if err != nil {
		fail(err)
	}
	out.Write(data)
	out.WriteByte('\n')
}

func write(es *store.JetStreamEventStore, out *bufio.Writer) {
	inputs(func(line int, in *input) {
		var err error
		switch {
		case in.Event != nil:
			err = es.SaveEvent(in.Event)
		case in.Snapshot != nil:
			err = es.SaveSnapshot(in.Snapshot)
		default:
			err = errors.New("input line has neither event nor snapshot")
		}
		result := writeResult{Line: line, OK: err == nil}
		if err != nil {
			result.Error = err.Error()
			var vc *aether.VersionConflictError
			if errors.As(err, &vc) {
				result.Conflict = &conflict{vc.ActorID, vc.AttemptedVersion, vc.CurrentVersion}
			}
		}
		emit(out, result)
	})
}

func read(es *store.JetStreamEventStore, actors []string, out *bufio.Writer) {
	for _, actor := range actors {
		result := readResult{ActorID: actor, Events: []*aether.Event{}, EventNanos: []int64{}, Errors: []replayError{}}
		replay, err := es.GetEventsWithErrors(actor, 0)
		if err != nil {
			result.EventsError = err.Error()
		} else {
			result.Events = append(result.Events, replay.Events...)
			for _, event := range replay.Events {
				result.EventNanos = append(result.EventNanos, event.Timestamp.UnixNano())
			}
			for _, e := range replay.Errors {
				result.Errors = append(result.Errors, replayError{e.SequenceNumber, e.RawData, e.Err.Error()})
			}
		}
		if result.LatestVersion, err = es.GetLatestVersion(actor); err != nil {
			result.LatestVersionError = err.Error()
		}
		if result.Snapshot, err = es.GetLatestSnapshot(actor); err != nil {
			result.SnapshotError = err.Error()
		} else {
			result.SnapshotNanos = result.Snapshot.Timestamp.UnixNano()
		}
		emit(out, result)
		out.Flush()
	}
}

func marshal(out *bufio.Writer) {
	type marshalled struct {
		Line  int    `json:"line"`
		Bytes []byte `json:"bytes"`
	}
	inputs(func(line int, in *input) {
		var value interface{} = in.Event
		if in.Event == nil {
			value = in.Snapshot
		}
		data, err := json.Marshal(value)
		if err != nil {
			fail(fmt.Errorf("input line %d: %w", line, err))
		}
		emit(out, marshalled{line, data})
	})
}
