// Package aether is a test stub of git.flowmade.one/flowmade-one/aether: only
// the types the seed's store/jetstream.go needs to compile, with the upstream
// JSON tags and field order (field order decides json.Marshal's key order).
// Used by tests/test_go_compat.py; not part of aether_audit.
package aether

import (
	"fmt"
	"time"
)

// EventTypeEventStored is the type of the event the store broadcasts after a save.
const EventTypeEventStored = "EventStored"

// Event is one event of one actor.
type Event struct {
	ID        string                 `json:"id"`
	EventType string                 `json:"eventType"`
	ActorID   string                 `json:"actorId"`
	CommandID string                 `json:"commandId,omitempty"`
	Version   int64                  `json:"version"`
	Data      map[string]interface{} `json:"data"`
	Metadata  map[string]string      `json:"metadata,omitempty"`
	Timestamp time.Time              `json:"timestamp"`
}

// ActorSnapshot is an actor's state at a version.
type ActorSnapshot struct {
	ActorID   string                 `json:"actorId"`
	Version   int64                  `json:"version"`
	State     map[string]interface{} `json:"state"`
	Timestamp time.Time              `json:"timestamp"`
}

// ReplayError is a stored message that did not decode.
type ReplayError struct {
	SequenceNumber uint64
	RawData        []byte
	Err            error
}

// ReplayResult holds the events that decoded and the errors of those that did not.
type ReplayResult struct {
	Events []*Event
	Errors []ReplayError
}

// VersionConflictError is returned when a save's version is not above the latest.
type VersionConflictError struct {
	ActorID          string
	AttemptedVersion int64
	CurrentVersion   int64
}

func (e *VersionConflictError) Error() string {
	return fmt.Sprintf("version conflict for actor %s: attempted version %d, current version %d",
		e.ActorID, e.AttemptedVersion, e.CurrentVersion)
}

// EventBroadcaster receives the EventStored events.
type EventBroadcaster interface {
	Publish(namespace string, event *Event)
}

// EventStoreWithErrors is the store interface the seed asserts it implements.
type EventStoreWithErrors interface {
	SaveEvent(event *Event) error
	GetEvents(actorID string, fromVersion int64) ([]*Event, error)
	GetLatestVersion(actorID string) (int64, error)
	GetLatestSnapshot(actorID string) (*ActorSnapshot, error)
	SaveSnapshot(snapshot *ActorSnapshot) error
	GetEventsWithErrors(actorID string, fromVersion int64) (*ReplayResult, error)
}
