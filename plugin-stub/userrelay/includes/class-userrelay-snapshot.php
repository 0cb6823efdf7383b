<?php
/**
 * Snapshots: the notes the hooks took during a request, turned into protocol events.
 *
 * Loaded only at shutdown of a request that touched users. One event per user: the user as
 * they are now, with "actions" saying what changed, the password hash only when it changed (or
 * on create), changed meta in "meta" (every value of a key holding several,
 * UserRelay_Meta_Values) and removed keys in "meta_deleted" (syncable keys only,
 * UserRelay_Protected_Meta). Privileged users are left out unless USERRELAY_SYNC_PRIVILEGED;
 * so are, on a network, other blogs' users. A user without an email is sent with "email": ""
 * (matched by login). Also owns who is reported at all (reported()) and the protocol's user
 * object (fields()); the versions an event stamps and carries are UserRelay_Event_Versions',
 * the user's last-change time UserRelay_Modified's.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Builds events from the hooks' notes.
 */
final class UserRelay_Snapshot {

	/**
	 * Settings.
	 *
	 * @var UserRelay_Settings
	 */
	private $settings;

	/**
	 * Constructor.
	 *
	 * @param UserRelay_Settings $settings Settings.
	 */
	public function __construct( UserRelay_Settings $settings ) {
		$this->settings = $settings;
	}

	/**
	 * Events for the outbox, oldest change first: each ['user_id' => int, 'payload' => array].
	 *
	 * @param array<int, array> $users   Notes per touched user (see UserRelay_Hooks::touch()).
	 * @param array<int, array> $deleted Identity of deleted users, 'done' once the row is gone.
	 * @param array<int, array> $origins Origin of a delivery applied to a user in this request.
	 * @return array[]
	 */
	public function build( array $users, array $deleted, array $origins ): array {
		$events = array();
		foreach ( $deleted as $user_id => $gone ) {
			if ( ! $gone['done'] ) {
				continue; // Something stopped the delete: the user is still there.
			}
			$created_here = isset( $users[ $user_id ] ) && $users[ $user_id ]['create'];
			unset( $users[ $user_id ] );
			if ( $created_here || ! $gone['reported'] ) {
				continue; // Never reported as existing (created here, privileged, another blog's).
			}
			// Ordered after every change of the user known here; remembered, so that a change
			// of this person made elsewhere before it learnt of the delete does not bring the
			// user back here (docs/adr/0011-convergent-versions.md).
			$version = UserRelay_Stored_Versions::next_after( UserRelay_Versions::newest( $gone['versions'] ) );
			UserRelay_Stored_Versions::bury( $gone['email'], $gone['login'], $version );
			$events[] = $this->event(
				$user_id,
				$gone['at'],
				array( 'delete' ),
				array(
					'id'    => $user_id,
					'login' => $gone['login'],
					'email' => $gone['email'],
					'roles' => isset( $gone['roles'] ) ? array_values( (array) $gone['roles'] ) : array(),
				),
				$origins,
				array(
					'created' => UserRelay_Versions::held( $gone['versions'], 'created', array() ),
					'delete'  => $version,
				)
			);
		}
		if ( $users ) {
			foreach ( $this->current_hashes( array_keys( $users ) ) as $user_id => $hash ) {
				$event = $this->snapshot( $user_id, $users[ $user_id ], $hash, $origins );
				if ( null !== $event ) {
					$events[] = $event;
				}
			}
		}
		usort(
			$events,
			static function ( $a, $b ) {
				return $a['payload']['occurred_at'] <=> $b['payload']['occurred_at'];
			}
		);
		return $events;
	}

	/**
	 * One user's event, or null when nothing to report changed or the user is not reported.
	 *
	 * @param int    $user_id User id.
	 * @param array  $notes   What the hooks saw.
	 * @param string $hash    The stored password hash now.
	 * @param array  $origins Origins of applied deliveries.
	 */
	private function snapshot( int $user_id, array $notes, string $hash, array $origins ): ?array {
		$password = $notes['password'] || $notes['create'] || ( null !== $notes['hash_before'] && ! hash_equals( $notes['hash_before'], $hash ) );
		$actions  = array();
		if ( $notes['create'] ) {
			$actions[] = 'create';
		} elseif ( $notes['edit'] ) {
			$actions[] = 'edit';
		}
		if ( $password ) {
			$actions[] = 'password';
		}
		if ( $notes['roles'] || $notes['create'] ) {
			$actions[] = 'roles';
		}
		if ( $notes['meta'] || $notes['meta_deleted'] ) {
			$actions[] = 'metadata';
		}
		if ( ! $actions ) {
			return null;
		}
		$user = get_userdata( $user_id );
		if ( ! $user ) {
			return null;
		}
		if ( ! $this->reported( $user ) ) {
			return null;
		}
		$fields = $this->fields( $user );
		if ( isset( $notes['login_before'] ) && '' !== $notes['login_before'] && $notes['login_before'] !== $fields['login'] ) {
			$fields['renamed_from'] = $notes['login_before']; // The receiver renames a user it holds under it.
		}
		if ( $password ) {
			$fields['password_hash'] = $hash;
		}
		if ( in_array( 'metadata', $actions, true ) ) {
			$changed = array_map( 'strval', array_merge( array_keys( $notes['meta'] ), array_keys( $notes['meta_deleted'] ) ) );
			$meta    = array();
			$removed = array();
			foreach ( UserRelay_Developer_Hooks::outgoing_meta_keys( $changed, $user_id ) as $key ) {
				if ( ! $this->syncable( $key ) ) {
					continue;
				}
				if ( metadata_exists( 'user', $user_id, $key ) ) {
					$meta[ $key ] = UserRelay_Meta_Values::encode( get_user_meta( $user_id, $key, false ) );
				} elseif ( in_array( $key, $changed, true ) ) {
					$removed[] = $key;
				}
			}
			if ( $meta || $removed ) {
				$fields['meta']         = (object) $meta; // {} rather than [] when empty.
				$fields['meta_deleted'] = array_values( array_unique( $removed ) );
			} else {
				$actions = array_values( array_diff( $actions, array( 'metadata' ) ) );
				if ( ! $actions ) {
					return null; // Only meta changed, and no key of it is sent.
				}
			}
		}
		$changed = UserRelay_Event_Versions::changed_groups( $notes, $actions, $fields );
		$whole   = in_array( 'roles', $actions, true );
		if ( $whole ) {
			// A user who enters a link's roles is sent as a create with everything: the event
			// carries the user whole (docs/protocol.md, "whole"); only what changed is stamped.
			$fields = $this->whole( $user_id, $fields, $hash );
		}
		$versions = UserRelay_Stored_Versions::stamp( $user, $changed, $notes['create'] ? UserRelay_Event_Versions::buried( $user ) : UserRelay_Facts::MIN_VERSION );
		UserRelay_Modified::record( $user_id, $notes['at'] );
		$carried = $whole ? UserRelay_Event_Versions::carried( $versions, UserRelay_Facts::ACTIONS, $fields ) : UserRelay_Event_Versions::carried( $versions, $actions, $fields );
		return $this->event( $user_id, $notes['at'], $actions, $fields, $origins, $carried, $whole ? array( 'whole' => true ) : array() );
	}

	/**
	 * "Send to partner sites now" (Users → All Users): the user whole, as a resend with every
	 * action (docs/protocol.md, "resend"), carrying the versions the user holds (nothing is
	 * stamped: nothing changed). Null for a user this site does not report (privileged, another
	 * blog's, without a login).
	 *
	 * @param WP_User $user The user.
	 * @return array|null The outbox entry.
	 */
	public function resend( WP_User $user ): ?array {
		if ( ! $this->reported( $user ) ) {
			return null;
		}
		$hashes = $this->current_hashes( array( (int) $user->ID ) );
		if ( ! isset( $hashes[ (int) $user->ID ] ) ) {
			return null;
		}
		$user    = get_userdata( (int) $user->ID );
		$actions = array( 'create', 'edit', 'password', 'roles', 'metadata' );
		$fields  = $this->whole( (int) $user->ID, $this->fields( $user ), $hashes[ (int) $user->ID ] );
		return $this->event(
			(int) $user->ID,
			microtime( true ),
			$actions,
			$fields,
			array(),
			UserRelay_Event_Versions::carried( UserRelay_Stored_Versions::of( $user ), $actions, $fields ),
			array(
				'whole'  => true,
				'resend' => true,
			)
		);
	}

	/**
	 * The protocol's user object made whole: the password hash and every syncable meta key (as
	 * the users route lists a user, UserRelay_Directory), beside what the event already holds
	 * (a removed key stays in meta_deleted).
	 *
	 * @param int    $user_id User id.
	 * @param array  $fields  The event's user.
	 * @param string $hash    The stored password hash.
	 */
	private function whole( int $user_id, array $fields, string $hash ): array {
		$fields['password_hash'] = $hash;
		$meta                    = ( new UserRelay_Directory( $this->settings ) )->meta( $user_id );
		$fields['meta']          = (object) array_merge( $meta, isset( $fields['meta'] ) ? (array) $fields['meta'] : array() );
		if ( ! isset( $fields['meta_deleted'] ) ) {
			$fields['meta_deleted'] = array();
		}
		return $fields;
	}

	/**
	 * Whether a user is reported at all (live events, users pages, digests, snapshots): on a
	 * network, a member of the blog this plugin serves; not privileged (UserRelay_Privileges:
	 * neither their data nor their password hash leaves, unless USERRELAY_SYNC_PRIVILEGED);
	 * and with a login (a user without an email is matched by login).
	 *
	 * @param WP_User $user The user.
	 */
	public function reported( WP_User $user ): bool {
		if ( ! $this->settings->is_member( (int) $user->ID ) ) {
			return false;
		}
		if ( UserRelay_Privileges::is_super_admin( $user ) ) {
			return false; // Never, whatever USERRELAY_SYNC_PRIVILEGED says (docs/adr/0016-multisite.md).
		}
		if ( ! $this->settings->sync_privileged() && UserRelay_Privileges::is_privileged( $user ) ) {
			return false;
		}
		if ( '' === (string) $user->user_login ) {
			error_log( "UserRelay: user {$user->ID} has no login; the relay needs one, so it is not reported" );
			return false;
		}
		return true;
	}

	/**
	 * Whether a meta key may be sent (the shared rule and USERRELAY_META_DENY).
	 *
	 * @param string $key Meta key.
	 */
	public function syncable( string $key ): bool {
		return ! $this->settings->is_meta_denied( $key );
	}

	/**
	 * The protocol's "user" object of a user, without password hash and meta.
	 *
	 * @param WP_User $user The user.
	 */
	public function fields( WP_User $user ): array {
		$fields = array(
			'id'    => (int) $user->ID,
			'login' => (string) $user->user_login,
			'email' => (string) $user->user_email,
		);
		foreach ( UserRelay_Profile::edited() as $field ) {
			$fields[ $field ] = UserRelay_Profile::value( $user, $field );
		}
		$fields['registered'] = (string) $user->user_registered;
		$fields['roles']      = array_values( (array) $user->roles );
		return $fields;
	}

	/**
	 * The outbox entry of one event.
	 *
	 * @param int      $user_id  User id.
	 * @param float    $at       When the last change happened.
	 * @param string[] $actions  Actions.
	 * @param array    $fields   The "user" object.
	 * @param array    $origins  Origins of applied deliveries.
	 * @param array    $versions The versions of the groups the event carries.
	 * @param array    $marks    Flags of the event: whole, resend.
	 */
	private function event( int $user_id, float $at, array $actions, array $fields, array $origins, array $versions, array $marks = array() ): array {
		$payload = array(
			'occurred_at' => round( $at, 3 ),
			'actions'     => $actions,
			'user'        => $fields,
			'versions'    => $versions,
		) + $marks;
		if ( isset( $origins[ $user_id ] ) ) {
			// A change made while a delivery was applied: the relay drops it (loop guard).
			$payload['origin'] = $origins[ $user_id ];
		}
		return array(
			'user_id' => $user_id,
			'payload' => $payload,
		);
	}

	/**
	 * The stored password hash of each existing user, read fresh (one query; primes the caches).
	 *
	 * @param int[] $user_ids User ids.
	 * @return array<int, string> Existing users only, in the given order.
	 */
	private function current_hashes( array $user_ids ): array {
		global $wpdb;
		$user_ids = array_map( 'intval', $user_ids );
		// The whole rows, fresh: a password set by a direct UPDATE may not be in the cache yet.
		$rows   = $wpdb->get_results( "SELECT * FROM {$wpdb->users} WHERE ID IN (" . implode( ',', $user_ids ) . ')', OBJECT_K );
		$hashes = array();
		foreach ( $user_ids as $user_id ) {
			if ( isset( $rows[ $user_id ] ) ) {
				$hashes[ $user_id ] = (string) $rows[ $user_id ]->user_pass;
				update_user_caches( $rows[ $user_id ] );
			}
		}
		if ( $hashes ) {
			update_meta_cache( 'user', array_keys( $hashes ) ); // Only those not cached yet.
		}
		return $hashes;
	}
}
